"""A replica's report to the queue manager as a pure function of what the replica
counted: one implementation for the serving replica (:class:`replicas.deployment.ReplicaCore`)
and the simulated one (:class:`simulator.replica.SimReplica`), so that both report the
same facts under the same keys.  No clock, no engine: the caller passes ``now_s``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from replicas.policy import ReplicaProfile, Strategy
from replicas.types import ReplicaLimits, ReplicaStats, SpeedProfile


@dataclass(frozen=True, slots=True)
class PolicyCounters:
    """What the replica's policy code counted since it started."""

    calls_by_strategy: Mapping[str, int]
    num_preserved_paused: int
    num_demotions: int
    recomputed_tokens: int
    num_starvation_promotions: int
    num_preempted_total: int
    #: Context tokens copied to the CPU pool (the simulator; the CPU build cannot swap).
    swapped_tokens: int = 0
    #: The scheduler's scoring time per step (measured on the engine; None in simulation).
    score_ms_per_step_p50: float | None = None
    score_ms_per_step_max: float | None = None


@dataclass(frozen=True, slots=True)
class ReplicaReportInputs:
    """Everything the report reads, taken by the caller at one instant."""

    replica_id: str
    deployment: str
    gpu_class: str
    model: str
    limits: ReplicaLimits
    num_running: int
    num_waiting: int
    active_request_ids: tuple[str, ...]
    unstarted_request_ids: tuple[str, ...]
    num_paused: int
    kv_usage: float
    output_tokens_per_s: float
    num_output_tokens_total: int
    profile: ReplicaProfile
    counters: PolicyCounters
    engine_alive: bool = True
    predictor_address: str | None = None
    #: Facts of the platform alone (process ids, simulated busy time), reported as given.
    platform: Mapping[str, float] = field(default_factory=dict)


def policy_extra(counters: PolicyCounters, profile: ReplicaProfile) -> dict[str, float]:
    """The policy's counters and the profile it believes, under the report's keys."""
    out = {f"calls_{s.value}": float(counters.calls_by_strategy.get(s.value, 0))
           for s in Strategy}
    out.update({
        "num_preserved_paused": float(counters.num_preserved_paused),
        "num_demotions": float(counters.num_demotions),
        "recomputed_tokens": float(counters.recomputed_tokens),
        "swapped_tokens": float(counters.swapped_tokens),
        "swap_supported": 1.0 if profile.can_swap else 0.0,
        "num_preempted_total": float(counters.num_preempted_total),
        "num_starvation_promotions": float(counters.num_starvation_promotions),
        "profile_a_ms_per_token": profile.a_ms_per_token,
        "profile_c_ms": profile.c_ms,
        "profile_saturation_tokens": float(profile.saturation_tokens),
        "kv_bytes_per_token": float(profile.kv_bytes_per_token),
    })
    for key in ("score_ms_per_step_p50", "score_ms_per_step_max"):
        value = getattr(counters, key)
        if value is not None:
            out[key] = float(value)
    return out


def replica_stats(r: ReplicaReportInputs, now_s: float) -> ReplicaStats:
    """The report: ``ReplicaStats`` with the policy's counters and the platform's facts."""
    return ReplicaStats(
        replica_id=r.replica_id, deployment=r.deployment, gpu_class=r.gpu_class, model=r.model,
        limits=r.limits, num_running=r.num_running, num_waiting=r.num_waiting,
        num_active_calls=len(r.active_request_ids), num_paused=r.num_paused,
        active_request_ids=r.active_request_ids, unstarted_request_ids=r.unstarted_request_ids,
        kv_usage=r.kv_usage, output_tokens_per_s=r.output_tokens_per_s,
        num_output_tokens_total=r.num_output_tokens_total, engine_alive=r.engine_alive,
        reported_at_s=now_s, predictor_address=r.predictor_address,
        speed_profile=SpeedProfile(r.profile.a_ms_per_token, r.profile.c_ms),
        extra={**policy_extra(r.counters, r.profile), **r.platform})
