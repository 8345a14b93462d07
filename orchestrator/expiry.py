"""When queued requests give up: the expiry heap of queued requests, and the recovered
requests held for their callers to re-attach."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from orchestrator.queued import QueuedRequest


class ExpiryHeap:
    """(expire at, seq, id) of queued requests, earliest first.  Entries of requests that
    left the queue are skipped when due (the seq tells a re-queued request apart) and
    dropped in bulk when they outnumber the queue."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []

    def add(self, request: QueuedRequest, expire_at_s: float, queued: Callable[[str], bool],
            num_queued: int) -> None:
        heapq.heappush(self._heap, (expire_at_s, request.seq, request.request_id))
        if len(self._heap) > 4 * num_queued + 1024:  # drop entries of dispatched ones
            self._heap = [e for e in self._heap if queued(e[2])]
            heapq.heapify(self._heap)

    def due(self, now_s: float) -> Iterator[tuple[int, str]]:
        """(seq, id) of every entry whose time has come, removed as yielded."""
        while self._heap and self._heap[0][0] <= now_s:
            _, seq, request_id = heapq.heappop(self._heap)
            yield seq, request_id


class HeldRequests:
    """Requests recovered from the store as queued, outside the queue until their caller
    re-attaches (so they never block its head), dropped at their give-up time."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[QueuedRequest, float]] = {}

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, request: QueuedRequest, give_up_s: float) -> None:
        self._held[request.request_id] = (request, give_up_s)

    def get(self, request_id: str) -> QueuedRequest | None:
        held = self._held.get(request_id)
        return held[0] if held else None

    def pop(self, request_id: str) -> QueuedRequest | None:
        held = self._held.pop(request_id, None)
        return held[0] if held else None

    def overdue(self, now_s: float) -> list[str]:
        """Remove and return the ids nobody re-attached to in time."""
        gone = [rid for rid, (_r, give_up_s) in self._held.items() if now_s >= give_up_s]
        for rid in gone:
            del self._held[rid]
        return gone
