"""The queue manager's state as JSON (``GET /v1/admin/queue``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.dispatcher import Dispatcher


def _num(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def snapshot(d: Dispatcher) -> dict[str, Any]:
    now = d.now_s()
    last = d.estimator.last_pass
    vq = last.virtual_queues if last else {}
    return {
        "policy": d.policy.name,
        "placement": d.placement_name,
        "num_queued": d.num_queued,
        "num_in_flight": d.num_in_flight,
        "outcomes": {o.value: n for o, n in d.outcomes.items()},
        "counters": dict(d.counters),
        "groups": [{"model": m, "slo_class": c, "queued": n}
                   for (m, c), n in sorted(d.policy.group_sizes().items())],
        "slo_attainment": {c: {"met": met, "total": total,
                               "attainment": met / total if total else None}
                           for c, (met, total) in sorted(d.attainment.items())},
        "estimator": {**{k: _num(v) for k, v in d.estimator.error_stats().items()},
                      "recent_waits_estimated_actual_s": list(d.estimator.samples)},
        "predicted_misses": last.num_predicted_misses if last else 0,
        **d.planner.describe(),
        "replicas": [
            {"replica_id": r.replica_id, "deployment": r.stats.deployment,
             "gpu_class": r.stats.gpu_class, "model": r.stats.model,
             "healthy": d.replicas.is_healthy(r, now), "in_flight": len(r.in_flight),
             "max_in_flight": r.stats.limits.max_in_flight,
             "num_running": r.stats.num_running, "num_waiting": r.stats.num_waiting,
             "num_paused": r.stats.num_paused,
             "kv_usage": r.stats.kv_usage,
             "output_tokens_per_s": r.stats.output_tokens_per_s,
             "estimated_tokens_per_s": r.speed.tokens_per_s,
             "virtual_queue": {"queued": vq.get(r.replica_id, (0, 0.0))[0],
                               "drain_s": vq.get(r.replica_id, (0, 0.0))[1]},
             "seconds_since_report": now - r.last_seen_s,
             "predictor_address": r.stats.predictor_address, "extra": dict(r.stats.extra)}
            for r in d.replicas
        ],
    }
