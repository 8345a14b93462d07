"""The simulator's event loop: a heap of events ordered by (time, phase, seq).

At equal times, events run in :class:`Phase` order; within a phase, in the order they
were scheduled (``seq``).  So the outcome of a run depends on nothing but its inputs and
its seeded generator: two runs of the same command are identical.

Phase order, and why:

1. ``ARRIVAL`` — a request reaches the ingress (queued before anything frees room at the
   same instant, so it competes for that room as it would in a live system);
2. ``API_DONE`` — an API call returns (the next turn is submitted);
3. ``STEP_END`` — an engine step ends: its tokens are delivered, turns end, room frees;
4. ``REPORT`` — a replica reports its state to the queue manager;
5. ``TICK`` — the queue manager's periodic work (expiry, the estimator's pass);
6. ``END`` — the end of the measured window.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Callable


class Phase(enum.IntEnum):
    ARRIVAL = 0
    API_DONE = 1
    STEP_END = 2
    REPORT = 3
    TICK = 4
    END = 5


class EventLoop:
    def __init__(self) -> None:
        self.now_s = 0.0
        self._heap: list[tuple[float, int, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self.num_events = 0
        self._stopped = False

    def clock(self) -> float:
        return self.now_s

    def at(self, time_s: float, phase: Phase, action: Callable[[], None]) -> None:
        """Run ``action`` at ``time_s`` (not before now)."""
        heapq.heappush(self._heap, (max(time_s, self.now_s), int(phase), next(self._seq), action))

    def stop(self) -> None:
        self._stopped = True

    def run(self, until_s: float | None = None) -> None:
        """Run events in order until none is left, :meth:`stop`, or ``until_s``."""
        heap = self._heap
        while heap and not self._stopped:
            if until_s is not None and heap[0][0] > until_s:
                self.now_s = until_s
                return
            time_s, _, _, action = heapq.heappop(heap)
            self.now_s = time_s
            self.num_events += 1
            action()
