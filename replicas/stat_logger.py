"""The vLLM stat logger that feeds a replica's :class:`~replicas.engine_stats.EngineStatsSink`
(imports vLLM; the rest of the replica's statistics do not)."""

from __future__ import annotations

from typing import Any

from vllm.v1.metrics.loggers import StatLoggerBase

from replicas.engine_stats import EngineStatsSink


class ReplicaStatLogger(StatLoggerBase):  # type: ignore[misc]
    """Passed to ``AsyncLLM(stat_loggers=[...])`` through :func:`make_stat_logger_factory`."""

    def __init__(self, vllm_config: Any = None, engine_index: int = 0, *,
                 sink: EngineStatsSink | None = None) -> None:
        self.sink = sink if sink is not None else EngineStatsSink()

    def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None,
               engine_idx: int = 0) -> None:
        self.sink.record(scheduler_stats, iteration_stats)

    def log_engine_initialized(self) -> None:
        pass

    def log(self) -> None:
        pass
