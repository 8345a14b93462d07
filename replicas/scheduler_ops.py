"""The replica's calls into its engine's scheduler (``AugserveScheduler``), typed at both
ends.  vLLM's engine-core utility call carries plain data between processes, so each call
and answer has a wire form (a dict) made and read only here.  No vLLM import."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from replicas.policy.profile import ReplicaProfile, StepRecord
from replicas.policy.ranking import RERANK_EVERY_STEPS, STARVATION_THRESHOLD_STEPS


class SchedulerOpError(ValueError):
    """A scheduler call that is malformed (unknown op, missing or bad field)."""


@dataclass(frozen=True, slots=True)
class Configure:
    """Hand the replica's policy and its profile to the scheduler (scores start over)."""

    policy: str
    profile: ReplicaProfile
    rerank_every_steps: int = RERANK_EVERY_STEPS
    starvation_threshold_steps: int | None = STARVATION_THRESHOLD_STEPS
    live_profile: bool = True

    def to_wire(self) -> dict[str, Any]:
        return {"op": "configure", "policy": self.policy, "profile": self.profile.to_json(),
                "rerank_every_steps": self.rerank_every_steps,
                "starvation_threshold_steps": self.starvation_threshold_steps,
                "live_profile": self.live_profile}


@dataclass(frozen=True, slots=True)
class GetState:
    """The scheduler's state now (:class:`SchedulerState`)."""

    def to_wire(self) -> dict[str, Any]:
        return {"op": "state"}


@dataclass(frozen=True, slots=True)
class TakeSteps:
    """The step records since the last such call (profiling)."""

    def to_wire(self) -> dict[str, Any]:
        return {"op": "steps"}


SchedulerOp = Configure | GetState | TakeSteps


def op_from_wire(payload: Any) -> SchedulerOp:
    """The call a wire dict stands for; :class:`SchedulerOpError` when it is malformed."""
    if not isinstance(payload, dict):
        raise SchedulerOpError(f"scheduler call must be a dict, got {type(payload).__name__}")
    op = payload.get("op")
    if op == "state":
        return GetState()
    if op == "steps":
        return TakeSteps()
    if op != "configure":
        raise SchedulerOpError(f"unknown scheduler utility op {op!r}")
    try:
        return Configure(
            policy=str(payload["policy"]), profile=ReplicaProfile(**payload["profile"]),
            rerank_every_steps=int(payload.get("rerank_every_steps", RERANK_EVERY_STEPS)),
            starvation_threshold_steps=payload.get("starvation_threshold_steps",
                                                   STARVATION_THRESHOLD_STEPS),
            live_profile=bool(payload.get("live_profile", True)))
    except (KeyError, TypeError, ValueError) as exc:
        raise SchedulerOpError(f"bad configure call: {exc}") from None


@dataclass(frozen=True, slots=True)
class SchedulerState:
    """What the scheduler reports of itself."""

    policy: str
    kv_usage: float
    num_free_blocks: int
    num_total_blocks: int
    num_running: int
    num_waiting: int
    num_kv_holding_waiting: int
    num_paused_sessions: int
    max_num_seqs: int
    #: Tokens of the last step and KV tokens of the running requests (the batch load).
    tokens_in_flight: int
    running_tokens: int
    num_starvation_promotions: int
    num_steps: int
    score_ms_per_step_p50: float
    score_ms_per_step_max: float
    #: The online fit of the step times (``source`` "live" once it has enough steps).
    live_profile: ReplicaProfile
    num_live_steps: int
    #: The first waiting requests, in the order they will be admitted.
    waiting_order: tuple[str, ...] = field(default_factory=tuple)

    def to_wire(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["waiting_order"] = list(self.waiting_order)
        return out

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> SchedulerState:
        values = dict(d)
        values["live_profile"] = ReplicaProfile(**values["live_profile"])
        values["waiting_order"] = tuple(values.get("waiting_order", ()))
        return cls(**values)


def steps_to_wire(steps: list[StepRecord]) -> dict[str, Any]:
    return {"steps": [dataclasses.asdict(s) for s in steps]}


def steps_from_wire(d: dict[str, Any]) -> list[StepRecord]:
    return [StepRecord(**s) for s in d["steps"]]
