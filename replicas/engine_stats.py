"""What the replica's vLLM stat logger (:mod:`replicas.stat_logger`) keeps: the engine's
latest state and its measured output throughput.  Throughput is tokens per second of *busy* engine time over a sliding
window, so an idle replica keeps reporting how fast it was when it last worked — which is
what the queue manager needs to compare replicas of different GPU classes."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from typing import Any

_TOKENS, _BUSY = itemgetter(1), itemgetter(2)  # of a (t, tokens, busy_s) sample


class ThroughputWindow:
    """Output tokens per busy second over the last ``window_s`` seconds (clock passed in)."""

    def __init__(self, window_s: float = 30.0, max_gap_s: float = 1.0) -> None:
        self.window_s = window_s
        self.max_gap_s = max_gap_s
        self._samples: deque[tuple[float, int, float]] = deque()  # (t, tokens, busy_s)
        self._last_t: float | None = None
        self.total_tokens = 0

    def add(self, now_s: float, num_tokens: int, busy: bool) -> None:
        gap = 0.0 if self._last_t is None else min(max(now_s - self._last_t, 0.0), self.max_gap_s)
        self._last_t = now_s
        self.total_tokens += num_tokens
        if busy or num_tokens:
            self._samples.append((now_s, num_tokens, gap))
        while self._samples and now_s - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def tokens_per_s(self) -> float:
        busy_s = sum(map(_BUSY, self._samples))  # the same sums as a loop, in C
        tokens = sum(map(_TOKENS, self._samples))
        return tokens / busy_s if busy_s > 0 else 0.0


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
