"""The waiting order and the starvation rule of the replica's scheduler (LAMPS §5):
a request passed over for more than ``threshold_steps`` engine steps goes to the front.

"Passed over" = a step admitted a request that arrived after it while it kept waiting.
Plain Python, driven by the scheduler subclass in the engine process and by unit tests."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple


class RankKey(NamedTuple):
    """The one order of waiting requests: user priority, then starved ones (oldest first),
    then the policy's score (None = arrival order), then arrival, then id.  A tuple, so
    that the queue's sorts compare keys in C (the engine re-sorts every few steps)."""

    priority: int
    not_promoted: bool
    score: float
    arrival_s: float
    request_id: str

    @classmethod
    def of(cls, request_id: str, priority: int, arrival_s: float, score: float | None,
           promoted: bool) -> RankKey:
        s = 0.0 if promoted or score is None or math.isnan(score) else score
        return cls(priority, not promoted, s, arrival_s, request_id)


class StarvationGuard:
    def __init__(self, threshold_steps: int | None = 100) -> None:
        self.threshold_steps = threshold_steps
        self._passes: dict[str, int] = {}
        self._promoted: set[str] = set()
        self.num_promotions = 0

    def promoted(self, request_id: str) -> bool:
        return request_id in self._promoted

    def passes(self, request_id: str) -> int:
        return self._passes.get(request_id, 0)

    def after_step(self, waiting: Iterable[tuple[str, float]],
                   admitted_arrivals: Iterable[float]) -> list[str]:
        """Count a pass for every still-waiting request older than the newest admitted one;
        returns the ids promoted by this step."""
        newest = max(admitted_arrivals, default=None)
        if newest is None or self.threshold_steps is None:
            return []
        promoted = []
        for request_id, arrival_s in waiting:
            if arrival_s >= newest or request_id in self._promoted:
                continue
            n = self._passes.get(request_id, 0) + 1
            self._passes[request_id] = n
            if n > self.threshold_steps:
                self._promoted.add(request_id)
                self.num_promotions += 1
                promoted.append(request_id)
        return promoted

    def forget(self, request_id: str) -> None:
        self._passes.pop(request_id, None)
        self._promoted.discard(request_id)

    def ids(self) -> list[str]:
        return list(self._passes.keys() | self._promoted)

    def __len__(self) -> int:
        return len(self._passes)
