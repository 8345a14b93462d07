"""What the queue manager counts: outcomes, event counters, SLO attainment per class and
the recent completion rate (which sets ``Retry-After``).  Counts only; nothing here
decides where a request goes."""

from __future__ import annotations

from collections import deque

from orchestrator.outcomes import Outcome
from orchestrator.queued import QueuedRequest

#: Completion times kept for the rate (the newest).
_MAX_COMPLETIONS = 4096


class Tally:
    def __init__(self) -> None:
        self.outcomes: dict[Outcome, int] = {o: 0 for o in Outcome}
        self.counters: dict[str, int] = {"best_effort": 0, "evictions": 0, "recovered": 0,
                                         "replans": 0}
        #: SLO class -> [met, finished or rejected]
        self.attainment: dict[str, list[int]] = {}
        self._completions: deque[float] = deque()

    def outcome(self, outcome: Outcome) -> None:
        self.outcomes[outcome] += 1

    def completed(self, outcome: Outcome, now_s: float) -> None:
        """A dispatched request ended (it counts toward the completion rate)."""
        self.outcomes[outcome] += 1
        self._completions.append(now_s)
        if len(self._completions) > _MAX_COMPLETIONS:
            self._completions.popleft()

    def slo(self, request: QueuedRequest, met: bool) -> None:
        if request.slo is None:
            return
        entry = self.attainment.setdefault(request.slo_class, [0, 0])
        entry[0] += int(met)
        entry[1] += 1

    def completion_rate_per_s(self, now_s: float, window_s: float = 30.0) -> float:
        """Completions per second over the last ``window_s`` seconds."""
        while self._completions and now_s - self._completions[0] > window_s:
            self._completions.popleft()
        if len(self._completions) < 2:
            return 0.0
        span = max(now_s - self._completions[0], 1.0)
        return len(self._completions) / span

    def retry_after_s(self, num_queued: int, now_s: float, min_s: float, max_s: float) -> float:
        """How long a rejected client should wait: the queue drained at the recent rate."""
        rate = self.completion_rate_per_s(now_s)
        if rate <= 0:
            return min_s
        return min(max_s, max(min_s, num_queued / rate))
