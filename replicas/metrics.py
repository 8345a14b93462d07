"""The replica policy's metrics through Ray's metrics API, published from the replica's
stats at every report (counters advance by the change since the last report)."""

from __future__ import annotations

from ray.util import metrics

from replicas.types import ReplicaStats

#: stats key → (metric name, description); cumulative values become counters.
COUNTERS = {
    "recomputed_tokens": ("augserve_replica_recomputed_tokens_total",
                          "Tokens computed again after a discard (beyond the prefix cache)."),
    "num_demotions": ("augserve_replica_demotions_total",
                      "Preserved sessions demoted to discard by the pause budget."),
    "num_starvation_promotions": ("augserve_replica_starvation_promotions_total",
                                  "Waiting requests moved to the front by the starvation rule."),
}
GAUGES = {
    "kv_usage": ("augserve_replica_kv_usage",
                 "Fraction (0-1) of the engine's KV cache blocks in use."),
    "num_preserved_paused": ("augserve_replica_paused_sessions",
                             "Preserved sessions holding KV while their API runs."),
    "score_ms_per_step_p50": ("augserve_replica_score_ms_per_step",
                              "Median scheduling (scoring and ordering) time per engine step."),
}
STRATEGIES = ("preserve", "discard", "swap")


class ReplicaMetrics:
    def __init__(self) -> None:
        tags = ("deployment", "replica", "policy")
        self._counters = {k: metrics.Counter(n, description=d, tag_keys=tags)
                          for k, (n, d) in COUNTERS.items()}
        self._gauges = {k: metrics.Gauge(n, description=d, tag_keys=tags)
                        for k, (n, d) in GAUGES.items()}
        self._calls = metrics.Counter("augserve_replica_api_calls_total",
                                      description="API calls by KV strategy chosen.",
                                      tag_keys=(*tags, "strategy"))
        self._last: dict[str, float] = {}

    def _advance(self, key: str, value: float) -> float:
        delta = value - self._last.get(key, 0.0)
        self._last[key] = value
        return max(delta, 0.0)

    def publish(self, report: ReplicaStats, policy: str) -> None:
        """Publish one stats report: its policy counters (``extra``) and KV usage."""
        stats = {**report.extra, "kv_usage": report.kv_usage}
        tags = {"deployment": report.deployment, "replica": report.replica_id, "policy": policy}
        for key, counter in self._counters.items():
            delta = self._advance(key, stats.get(key, 0.0))
            if delta:
                counter.inc(delta, tags=tags)
        for s in STRATEGIES:
            delta = self._advance(f"calls_{s}", stats.get(f"calls_{s}", 0.0))
            if delta:
                self._calls.inc(delta, tags={**tags, "strategy": s})
        for key, gauge in self._gauges.items():
            gauge.set(stats.get(key, 0.0), tags=tags)
