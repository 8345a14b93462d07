"""Metrics through Ray's metrics API (exported by every Ray node's metrics agent)."""

from __future__ import annotations

from ray.util import metrics

LATENCY_BOUNDARIES_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600]


class IngressMetrics:
    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "augserve_requests_total", description="Requests by endpoint and outcome.",
            tag_keys=("endpoint", "outcome", "model"))
        self.output_tokens = metrics.Counter(
            "augserve_output_tokens_total", description="Generated tokens.", tag_keys=("model",))
        self.ttft = metrics.Histogram(
            "augserve_ttft_seconds", description="Time to first token.",
            boundaries=LATENCY_BOUNDARIES_S, tag_keys=("model",))
        self.predictions = metrics.Counter(
            "augserve_predictions_total", description="Predictions attached to requests, by "
            "source: the predictor, or the client's fallback (slow, down or circuit open).",
            tag_keys=("model", "source"))
        self.e2e = metrics.Histogram(
            "augserve_e2e_seconds", description="End-to-end latency of finished requests.",
            boundaries=LATENCY_BOUNDARIES_S, tag_keys=("model",))


class QueueMetrics:
    def __init__(self) -> None:
        self.queue_length = metrics.Gauge(
            "augserve_queue_length", description="Requests waiting in the global queue.")
        self.in_flight = metrics.Gauge(
            "augserve_in_flight", description="Requests dispatched and not finished.")
        self.queue_wait = metrics.Histogram(
            "augserve_queue_wait_seconds", description="Time from admission to dispatch.",
            boundaries=LATENCY_BOUNDARIES_S, tag_keys=("gpu_class",))
        self.admissions = metrics.Counter(
            "augserve_queue_outcomes_total", description="Queue outcomes.", tag_keys=("outcome",))
        self.group_length = metrics.Gauge(
            "augserve_queue_group_length", description="Queued requests per request group.",
            tag_keys=("model", "slo_class"))
        self.estimator_error = metrics.Gauge(
            "augserve_queue_estimator_error", description="Median relative error of the "
            "waiting-time estimate (|estimated - actual| / actual) over recent dispatches.")
        self.durable = metrics.Gauge(
            "augserve_queue_durable", description="1 while accepted requests reach Redis.")
        self.recoveries = metrics.Counter(
            "augserve_queue_recovered_total", description="Requests recovered from the store "
            "after a queue manager restart.")
        self.nondurable = metrics.Counter(
            "augserve_queue_nondurable_admissions_total", description="Requests accepted in "
            "memory only (best-effort durability while Redis was unreachable).")
        self.events = metrics.Counter(
            "augserve_queue_events_total", description="Evictions, SLO rejections, best-effort "
            "admissions, expiries, QLM re-plans.", tag_keys=("event",))
        self.slo = metrics.Counter(
            "augserve_slo_requests_total", description="Requests with an SLO by class and "
            "whether they met it (rejected and expired ones did not).",
            tag_keys=("slo_class", "met"))
        self._last: dict[tuple, int] = {}

    def _count(self, counter, key: tuple, value: int, tags: dict[str, str]) -> None:
        delta = value - self._last.get(key, 0)
        if delta > 0:
            counter.inc(delta, tags=tags)
        self._last[key] = value

    def publish_counters(self, core) -> None:
        """Turn the dispatcher's cumulative counts into counter increments."""
        from orchestrator.outcomes import Outcome
        events = {**core.counters, "rejected_slo": core.outcomes[Outcome.REJECTED_SLO],
                  "expired": core.outcomes[Outcome.EXPIRED]}
        for name, value in events.items():
            self._count(self.events, ("event", name), value, {"event": name})
        for cls, (met, total) in core.attainment.items():
            self._count(self.slo, ("slo", cls, "1"), met, {"slo_class": cls, "met": "true"})
            self._count(self.slo, ("slo", cls, "0"), total - met, {"slo_class": cls, "met": "false"})
