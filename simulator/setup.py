"""From a Serve config file and profiles to the simulated fleet's replicas.

The config is the very file ``augserve serve`` and ``bench compare`` take: its augserve
application's ``args`` (:class:`~orchestrator.config.AppConfig`) and each replica
deployment's ``num_replicas``.  Each replica's engine comes from its ``engine`` block and
its profile: KV blocks = KV GiB ÷ (KV bytes per token × block size), the GiB from the
profile (a GPU's KV capacity) or else the config's ``kv_cache_gib``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from orchestrator.config import AppConfig
from replicas.config import ReplicaConfig
from replicas.policy import ReplicaProfile, fit_line
from simulator.cost import LinearCost
from simulator.engine import EngineLimits
from simulator.profiles import Profile, ProfileError, parse_profile_spec
from simulator.replica import ReplicaSetup

#: vLLM's defaults where the config leaves a setting to vLLM
#: (``vllm/config/scheduler.py``: max_num_batched_tokens; the KV block size of GPUs).
VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS = 2048
VLLM_DEFAULT_BLOCK_SIZE = 16
#: Context length where the config leaves it to the model.
DEFAULT_MAX_MODEL_LEN = 8192
GIB = 1 << 30


class SimConfigError(ValueError):
    """A config the simulator cannot run; the message names the file and key."""


@dataclass(frozen=True)
class SimFleetConfig:
    path: str
    app: AppConfig
    #: deployment name -> replicas
    num_replicas: dict[str, int]

    @property
    def gpu_classes(self) -> list[str]:
        return list(dict.fromkeys(r.gpu_class for r in self.app.replicas))


def load_config(path: str) -> SimFleetConfig:
    p = Path(path)
    if not p.is_file():
        raise SimConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SimConfigError(f"{path}: not valid YAML: {exc}") from None
    apps = [a for a in raw.get("applications") or []
            if isinstance(a, dict) and str(a.get("import_path", "")).startswith("orchestrator.app:")]
    if not apps:
        raise SimConfigError(f"{path}: key 'applications': no augserve application "
                             "(import_path orchestrator.app:build_app)")
    try:
        app = AppConfig.model_validate(apps[0].get("args") or {})
    except ValidationError as exc:
        e = exc.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        raise SimConfigError(f"{path}: key 'args.{where}': {e['msg']}") from None
    counts: dict[str, int] = {r.name: 1 for r in app.replicas}
    for d in apps[0].get("deployments") or []:
        if d.get("name") in counts and "num_replicas" in d:
            n = d["num_replicas"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise SimConfigError(f"{path}: key 'deployments[{d['name']}].num_replicas' must "
                                     f"be a whole number ≥ 0 for the simulator, got {n!r}")
            counts[d["name"]] = n
    if not any(counts.values()):
        raise SimConfigError(f"{path}: key 'deployments': every replica deployment has 0 replicas")
    return SimFleetConfig(path, app, counts)


def policy_profile(profile: Profile) -> ReplicaProfile:
    """What the replica's policies are told of its speed: the profile's own line (a table
    is fitted to one), S, KV bytes per token and the swap bandwidth."""
    cost = profile.cost()
    if isinstance(cost, LinearCost):
        a, c = cost.a_ms_per_token, cost.c_ms
    else:
        a, c = fit_line(list(cost.points))  # type: ignore[attr-defined]
    kv = int(profile.kv_bytes_per_token.value)
    swap = profile.swap_s_per_token.value if profile.swap_s_per_token else None
    return ReplicaProfile(a, c, int(profile.saturation_tokens.value), kv,
                          kv / swap if swap else None, source="profiled")


def replica_setups(cfg: SimFleetConfig, profile_spec: str,
                   max_request_tokens: int = 0) -> list[ReplicaSetup]:
    """One setup per replica; ``max_request_tokens``: the longest request's whole context
    (a replica whose KV cannot hold it is refused)."""
    profiles = parse_profile_spec(profile_spec, cfg.gpu_classes)
    out = []
    for index, rc in enumerate(cfg.app.replicas):
        for k in range(cfg.num_replicas[rc.name]):
            out.append(_setup(cfg, index, rc, f"{rc.name}-{k}", profiles[rc.gpu_class],
                              max_request_tokens))
    return out


def _setup(cfg: SimFleetConfig, index: int, rc: ReplicaConfig, replica_id: str,
           profile: Profile, max_request_tokens: int) -> ReplicaSetup:
    e, s = rc.engine, rc.scheduling
    key = f"args.replicas[{index}]"
    kv_bytes = int(profile.kv_bytes_per_token.value)
    if kv_bytes <= 0:
        raise ProfileError(f"profile {profile.name}: key 'kv_bytes_per_token' must be > 0")
    kv_gib = profile.kv_capacity_gib.value if profile.kv_capacity_gib else e.kv_cache_gib
    block_size = e.block_size or VLLM_DEFAULT_BLOCK_SIZE
    num_blocks = int(kv_gib * GIB // (kv_bytes * block_size))
    override = e.extra_args.get("num_gpu_blocks_override")
    if profile.kv_capacity_gib is None and isinstance(override, int) and override > 0:
        num_blocks = override  # vLLM's own override of the KV size
    max_model_len = e.max_model_len or DEFAULT_MAX_MODEL_LEN
    usable_tokens = (num_blocks - 1) * block_size
    need = min(max_request_tokens, max_model_len)
    if usable_tokens < max(need, block_size):
        source = (f"profile {profile.name} key 'kv_capacity_gib'" if profile.kv_capacity_gib
                  else f"{cfg.path}: key '{key}.engine.kv_cache_gib'")
        raise SimConfigError(f"{source}: {kv_gib:g} GiB holds {max(usable_tokens, 0)} tokens "
                             f"at {kv_bytes} bytes per token, less than one request of "
                             f"{need} tokens")
    swap = profile.swap_s_per_token.value if profile.swap_s_per_token else None
    cpu_gib = profile.cpu_swap_gib.value if profile.cpu_swap_gib else 0.0
    return ReplicaSetup(
        replica_id=replica_id, deployment=rc.name, gpu_class=rc.gpu_class, model=rc.model_name,
        policy=s.policy,
        limits=EngineLimits(e.max_num_seqs, e.max_num_batched_tokens
                            or VLLM_DEFAULT_MAX_NUM_BATCHED_TOKENS, max_model_len),
        num_blocks=num_blocks, block_size=block_size,
        enable_prefix_caching=e.enable_prefix_caching,
        max_waiting_requests=rc.room.max_waiting_requests, cost=profile.cost(),
        host_s_per_step=(profile.host_ms_per_step.value / 1000.0
                         if profile.host_ms_per_step else 0.0),
        profile=policy_profile(profile), swap_s_per_token=swap,
        cpu_swap_tokens=int(cpu_gib * GIB // kv_bytes) if swap else 0,
        rerank_every_steps=s.rerank_every_steps,
        starvation_threshold_steps=s.starvation_threshold_steps,
        pause_kv_watermark=s.pause_kv_watermark, reserved_slots=s.reserved_slots,
        budget_check_s=s.budget_check_s, live_profile=s.live_profile)


def describe_setups(setups: list[ReplicaSetup]) -> list[dict[str, Any]]:
    return [{"replica_id": s.replica_id, "gpu_class": s.gpu_class, "policy": s.policy,
             "num_blocks": s.num_blocks, "block_size": s.block_size,
             "max_num_seqs": s.limits.max_num_seqs,
             "max_num_batched_tokens": s.limits.max_num_batched_tokens} for s in setups]
