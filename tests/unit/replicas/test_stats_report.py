"""The replica's report as a pure function (one for the serving and the simulated replica)."""

from __future__ import annotations

from replicas.policy import ReplicaProfile
from replicas.stats_report import PolicyCounters, ReplicaReportInputs, replica_stats
from replicas.types import ReplicaLimits


def _inputs(**kw) -> ReplicaReportInputs:
    counters = PolicyCounters(
        calls_by_strategy={"preserve": 3, "swap": 1}, num_preserved_paused=2, num_demotions=1,
        recomputed_tokens=400, num_starvation_promotions=5, num_preempted_total=7,
        swapped_tokens=10, **kw)
    return ReplicaReportInputs(
        replica_id="r0", deployment="d", gpu_class="g", model="m", limits=ReplicaLimits(32, 8),
        num_running=4, num_waiting=6, active_request_ids=("a", "b", "c"),
        unstarted_request_ids=("c",), num_paused=1, kv_usage=0.5, output_tokens_per_s=120.0,
        num_output_tokens_total=999,
        profile=ReplicaProfile(0.05, 10.0, 256, 512, swap_bytes_per_s=None),
        counters=counters, platform={"pid": 42.0})


def test_report_carries_counters_profile_and_platform() -> None:
    s = replica_stats(_inputs(), now_s=12.5)
    assert (s.replica_id, s.num_running, s.num_waiting, s.num_paused) == ("r0", 4, 6, 1)
    assert s.num_active_calls == 3 and s.unstarted_request_ids == ("c",)
    assert s.reported_at_s == 12.5 and s.limits.max_num_seqs == 32
    e = s.extra
    assert (e["calls_preserve"], e["calls_discard"], e["calls_swap"]) == (3.0, 0.0, 1.0)
    assert e["num_preempted_total"] == 7.0 and e["recomputed_tokens"] == 400.0
    assert e["swapped_tokens"] == 10.0
    assert e["swap_supported"] == 0.0 and e["kv_bytes_per_token"] == 512.0
    assert e["profile_a_ms_per_token"] == 0.05 and e["profile_saturation_tokens"] == 256.0
    assert e["pid"] == 42.0
    assert "score_ms_per_step_p50" not in e  # not measured: not reported


def test_report_is_pure() -> None:
    a = replica_stats(_inputs(score_ms_per_step_p50=0.3), now_s=1.0)
    b = replica_stats(_inputs(score_ms_per_step_p50=0.3), now_s=1.0)
    assert a == b and a.extra["score_ms_per_step_p50"] == 0.3
