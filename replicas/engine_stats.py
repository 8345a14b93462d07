"""What the replica's vLLM stat logger (:mod:`replicas.stat_logger`) keeps: the engine's
latest state and its measured output throughput.  Throughput is tokens per second of *busy* engine time over a sliding
window, so an idle replica keeps reporting how fast it was when it last worked — which is
what the queue manager needs to compare replicas of different GPU classes."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any


class ThroughputWindow:
    """Output tokens per busy second over the last ``window_s`` seconds (clock passed in)."""

    def __init__(self, window_s: float = 30.0, max_gap_s: float = 1.0) -> None:
        self.window_s = window_s
        self.max_gap_s = max_gap_s
        # the samples in the window, one deque per field (summed in C), oldest first
        self._times: deque[float] = deque()
        self._tokens: deque[int] = deque()
        self._busy_s: deque[float] = deque()
        self._window_tokens = 0  # an integer: kept exactly as the deque's sum
        self._last_t: float | None = None
        self.total_tokens = 0

    def add(self, now_s: float, num_tokens: int, busy: bool) -> None:
        gap = 0.0 if self._last_t is None else min(max(now_s - self._last_t, 0.0), self.max_gap_s)
        self._last_t = now_s
        self.total_tokens += num_tokens
        times = self._times
        if busy or num_tokens:
            times.append(now_s)
            self._tokens.append(num_tokens)
            self._busy_s.append(gap)
            self._window_tokens += num_tokens
        while times and now_s - times[0] > self.window_s:
            times.popleft()
            self._window_tokens -= self._tokens.popleft()
            self._busy_s.popleft()

    def tokens_per_s(self) -> float:
        busy_s = sum(self._busy_s)
        return self._window_tokens / busy_s if busy_s > 0 else 0.0


class EngineStatsSink:
    """The latest scheduler state plus the throughput window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.num_running = 0
        self.num_waiting = 0
        self.kv_usage = 0.0
        self.num_preempted_total = 0
        self.throughput = ThroughputWindow()

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        was_busy = self.num_running > 0
        if scheduler_stats is not None:
            self.num_running = scheduler_stats.num_running_reqs
            self.num_waiting = scheduler_stats.num_waiting_reqs
            self.kv_usage = float(scheduler_stats.kv_cache_usage)
        tokens = 0
        if iteration_stats is not None:
            tokens = iteration_stats.num_generation_tokens
            self.num_preempted_total += iteration_stats.num_preempted_reqs
        self.throughput.add(self._clock(), tokens, was_busy)


def make_stat_logger_factory(sink: EngineStatsSink):
    """vLLM's stat-logger factory for ``sink`` (imports vLLM: the engine process only)."""
    from replicas.stat_logger import ReplicaStatLogger

    def factory(vllm_config: Any, engine_index: int = 0) -> ReplicaStatLogger:
        return ReplicaStatLogger(vllm_config, engine_index, sink=sink)
    return factory
