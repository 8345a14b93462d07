"""Profiles as data: ``simulator/profiles/NAME.yaml``, one per GPU class and model, every
number marked ``measured`` (with who measured it, where) or ``derived`` (with the formula).
A profile gives the step-cost model, KV bytes per token and, for a GPU, the KV capacity
and CPU swap space (which then replace the replica's ``kv_cache_gib``; a CPU profile has
none, so the config's sizes stand).  docs/simulator_profiles.md lists them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from augserve_common.strict import StrictModel
from simulator.cost import LinearCost, StepCost, TableCost

PROFILES_DIR = Path(__file__).with_name("profiles")


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and key."""


class Number(StrictModel):
    value: float = Field(..., ge=0, description="The number, in the unit its key names.")
    basis: Literal["measured", "derived"] = Field(..., description="How it was obtained.")
    source: str = Field(..., min_length=3, description="Who measured it and where, or the "
                        "formula with its inputs.")


class StepCostSpec(StrictModel):
    kind: Literal["linear", "table"] = Field(..., description="Cost model.")
    c_ms: Number | None = Field(None, description="linear: fixed ms per step.")
    a_ms_per_token: Number | None = Field(None, description="linear: ms per computed token.")
    b_ms_per_context_token: Number | None = Field(
        None, description="ms per context token attended to (both kinds; default 0).")
    points: list[tuple[float, float]] | None = Field(
        None, description="table: (tokens in the step, ms) points, increasing tokens.")
    points_source: str | None = Field(None, description="table: where the points come from.")

    @model_validator(mode="after")
    def _complete(self) -> StepCostSpec:
        if self.kind == "linear" and (self.c_ms is None or self.a_ms_per_token is None):
            raise ValueError("a linear step_cost needs c_ms and a_ms_per_token")
        if self.kind == "table" and (not self.points or len(self.points) < 2
                                     or not self.points_source):
            raise ValueError("a table step_cost needs two or more points and points_source")
        return self

    def build(self) -> StepCost:
        b = self.b_ms_per_context_token.value if self.b_ms_per_context_token else 0.0
        if self.kind == "linear":
            assert self.c_ms is not None and self.a_ms_per_token is not None
            return LinearCost(self.c_ms.value, self.a_ms_per_token.value, b)
        return TableCost(tuple(sorted((float(x), float(y)) for x, y in self.points or ())), b)


class Profile(StrictModel):
    name: str = Field(..., description="The file's stem.")
    gpu: str = Field(..., description="GPU class label (CPU for this machine's engine).")
    model: str = Field(..., description="Model label.")
    tensor_parallel: int = Field(1, ge=1, description="GPUs per replica.")
    step_cost: StepCostSpec = Field(..., description="Engine step time.")
    saturation_tokens: Number = Field(..., description="S: tokens below which a step costs "
                                      "about the same (the policies' profile).")
    kv_bytes_per_token: Number = Field(..., description="KV bytes per token.")
    kv_capacity_gib: Number | None = Field(None, description="KV cache GiB of one replica "
                                           "(GPU); absent: the config's kv_cache_gib.")
    swap_s_per_token: Number | None = Field(None, description="Seconds to move one token's "
                                            "KV one way between GPU and CPU; absent: no swap.")
    cpu_swap_gib: Number | None = Field(None, description="CPU memory for swapped KV.")
    host_ms_per_step: Number | None = Field(
        None, description="Host time between two engine steps, outside the model run the "
        "step cost times (scheduling, output processing); absent: 0.")
    engine_cores: Number | None = Field(
        None, description="CPU engines: cores one engine uses while it steps (its CPU time "
        "over its steps' time), for engines that share a machine (simulator.shared_cpu).")
    profiled_background_cores: Number | None = Field(
        None, description="CPU engines: cores the rest of the machine (the engine's host "
        "process and everything else) used while the step cost was measured.")

    def cost(self) -> StepCost:
        return self.step_cost.build()


def load_profile(name_or_path: str) -> Profile:
    """A profile by name (``simulator/profiles/NAME.yaml``) or by path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ProfileError(f"profile {name_or_path!r}: no file {path}; known: {', '.join(known)}")
    try:
        raw = yaml.safe_load(path.read_text())
        profile = Profile.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise ProfileError(f"{path}: {_first_error(exc)}") from None
    if profile.name != path.stem:
        raise ProfileError(f"{path}: key 'name' is {profile.name!r}, must be the file's stem "
                           f"{path.stem!r}")
    return profile


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(x) for x in e["loc"]) or "(top)"
    return f"key {where!r}: {e['msg']}"


def parse_profile_spec(spec: str, gpu_classes: list[str]) -> dict[str, Profile]:
    """``NAME`` for every class, or ``class=NAME,class=NAME`` (every class named once)."""
    if "=" not in spec:
        profile = load_profile(spec)
        return {c: profile for c in gpu_classes}
    out: dict[str, Profile] = {}
    for part in spec.split(","):
        cls, _, name = part.partition("=")
        cls, name = cls.strip(), name.strip()
        if cls not in gpu_classes:
            raise ProfileError(f"--profile: {cls!r} is not a GPU class of the config "
                               f"({', '.join(gpu_classes)})")
        out[cls] = load_profile(name)
    missing = [c for c in gpu_classes if c not in out]
    if missing:
        raise ProfileError(f"--profile: GPU class(es) {missing} have no profile")
    return out
