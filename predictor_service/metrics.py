"""The predictor's metrics: through Ray's metrics API when it runs inside Ray (the Serve
application), otherwise kept only in :class:`Counters` (which ``Info`` reports)."""

from __future__ import annotations

from dataclasses import dataclass

ERROR_BOUNDARIES_TOKENS = [5, 10, 20, 50, 100, 200, 500, 1000, 2000]
LATENCY_BOUNDARIES_S = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5]


@dataclass
class Counters:
    predictions: int = 0
    invalid: int = 0
    observations: int = 0
    refits: int = 0
    redis_errors: int = 0
    corrupt_snapshots: int = 0


class PredictorMetrics:
    def __init__(self) -> None:
        self.counters = Counters()
        self._ray = None
        try:
            import ray
            if ray.is_initialized():
                from ray.util import metrics
                self._ray = {
                    "redis": metrics.Gauge("augserve_predictor_redis_connected",
                                           description="1 when the predictor's Redis is reachable."),
                    "version": metrics.Gauge("augserve_predictor_version", tag_keys=("model",),
                                             description="Version of the fitted length model."),
                    "requests": metrics.Counter("augserve_predictor_requests_total",
                                                tag_keys=("method", "outcome"),
                                                description="Predictor calls by outcome."),
                    "latency": metrics.Histogram("augserve_predictor_batch_seconds",
                                                 boundaries=LATENCY_BOUNDARIES_S,
                                                 description="Time to evaluate one batch."),
                    "error": metrics.Histogram("augserve_predictor_abs_error_tokens",
                                               boundaries=ERROR_BOUNDARIES_TOKENS, tag_keys=("model",),
                                               description="|predicted - actual| output tokens "
                                               "of observed requests, before learning from them."),
                }
        except ImportError:
            pass

    def redis_connected(self, up: bool) -> None:
        if self._ray:
            self._ray["redis"].set(1.0 if up else 0.0)

    def request(self, method: str, outcome: str, n: int = 1) -> None:
        if n <= 0:
            return
        if outcome == "invalid":
            self.counters.invalid += n
        elif outcome == "ok" and method == "predict":
            self.counters.predictions += n
        elif outcome == "ok" and method == "observe":
            self.counters.observations += n
        if self._ray:
            self._ray["requests"].inc(n, tags={"method": method, "outcome": outcome})

    def batch_time(self, seconds: float) -> None:
        if self._ray:
            self._ray["latency"].observe(seconds)

    def version(self, model: str, version: int) -> None:
        if self._ray:
            self._ray["version"].set(version, tags={"model": model})

    def abs_errors(self, model: str, errors) -> None:
        if self._ray:
            for e in errors:
                self._ray["error"].observe(float(e), tags={"model": model})
