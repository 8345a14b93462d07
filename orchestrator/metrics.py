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
