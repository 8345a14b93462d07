"""Ordering policies of the global queue: one small class per policy behind one seam.

A policy only orders; admission, placement, room and deadlines belong to the dispatcher.
Queued requests are kept in **request groups** (model, SLO class), one heap per group, so
that taking the next request for a replica with room costs ``O(groups · log n)`` however
long the queue is (QLM keeps per-group queues for the same reason).

Each policy defines its order in one place, :meth:`QueuePolicy.key`:

- ``fifo``: admission order;
- ``priority``: the order of :class:`QueuedRequest` (priority, arrival, sequence — vLLM's
  ``Request.__lt__``);
- ``edf``: earliest deadline first (then priority, arrival);
- ``qlm``: EDF, with requests the estimator says will miss anyway moved behind those that
  can still make it, and each group preferring the replicas its last re-plan gave it
  (:mod:`orchestrator.policies.qlm`).
"""

from __future__ import annotations

import heapq
from abc import ABC
from collections.abc import Iterator
from typing import ClassVar, Protocol

from orchestrator.queued import QueuedRequest

#: A heap entry: (policy key, push number, request, its group).  The push number is
#: unique, so comparisons never reach the request; an entry is live while the request's
#: ``queue_entry`` is its number.
_Entry = tuple[tuple, int, QueuedRequest, tuple[str, str]]


class QueueObserver(Protocol):
    """Told of every request entering (``queued``) and leaving (``removed``) the queue,
    with its policy key (the waiting-time estimator keeps its curve this way)."""

    def queued(self, request: QueuedRequest, key: tuple) -> None: ...

    def removed(self, request: QueuedRequest, key: tuple) -> None: ...


class QueuePolicy(ABC):
    """Holds queued requests in per-group heaps and yields them in ``key`` order."""

    name: ClassVar[str]
    #: The key reads ``request.late`` (the estimator's pass then marks and re-keys).
    uses_late: ClassVar[bool] = False

    def __init__(self) -> None:
        self._live: dict[str, QueuedRequest] = {}
        self._heaps: dict[tuple[str, str], list[_Entry]] = {}
        self._counts: dict[tuple[str, str], int] = {}
        self._n = 0
        self._observers: list[QueueObserver] = []

    def watch(self, observer: QueueObserver) -> None:
        """Tell ``observer`` of every request that enters or leaves the queue."""
        self._observers.append(observer)

    def key(self, request: QueuedRequest) -> tuple:
        """The order: smaller first.  Policies override this and nothing else of the order."""
        return (request.seq,)

    # ---- membership -------------------------------------------------------------------
    def push(self, request: QueuedRequest, now_s: float) -> None:
        assert request.request_id not in self._live, request.request_id
        self._live[request.request_id] = request
        group = request.group
        self._n += 1
        request.queue_entry = self._n
        key = self.key(request)
        heapq.heappush(self._heaps.setdefault(group, []), (key, self._n, request, group))
        self._counts[group] = self._counts.get(group, 0) + 1
        for observer in self._observers:
            observer.queued(request, key)

    def remove(self, request_id: str) -> QueuedRequest | None:
        """Take a request out (dispatched, cancelled or expired); None if absent."""
        request = self._live.pop(request_id, None)
        if request is not None:
            request.queue_entry = 0
            group = request.group
            self._counts[group] -= 1
            heap = self._heaps[group]
            if len(heap) > 2 * self._counts[group] + 32:
                self._heaps[group] = [e for e in heap if e[2].queue_entry == e[1]]
                heapq.heapify(self._heaps[group])
            for observer in self._observers:
                observer.removed(request, self.key(request))
        return request

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._live

    def get(self, request_id: str) -> QueuedRequest | None:
        return self._live.get(request_id)

    def live(self) -> Iterator[QueuedRequest]:
        """Every queued request, in no particular order."""
        return iter(list(self._live.values()))

    def has_queued(self, model: str) -> bool:
        return any(n for (m, _c), n in self._counts.items() if m == model)

    def group_sizes(self) -> dict[tuple[str, str], int]:
        return {g: n for g, n in self._counts.items() if n}

    # ---- order ------------------------------------------------------------------------
    def _head(self, group: tuple[str, str]) -> _Entry | None:
        heap = self._heaps.get(group)
        while heap:
            entry = heap[0]
            if entry[2].queue_entry == entry[1]:
                return entry
            heapq.heappop(heap)
        return None

    def take(self, groups: list[tuple[str, str]], latest: bool = False) -> QueuedRequest | None:
        """Remove the first head among ``groups`` (``latest``: the head that comes last)."""
        best: _Entry | None = None
        for group in groups:
            head = self._head(group)
            if head is not None and (best is None or (head[:2] > best[:2] if latest
                                                      else head[:2] < best[:2])):
                best = head
        return None if best is None else self.remove(best[2].request_id)

    def groups(self, model: str) -> list[tuple[str, str]]:
        """The groups of ``model`` with something queued."""
        return [g for g, n in self._counts.items() if n and g[0] == model]

    def push_back(self, requests: list[QueuedRequest], now_s: float) -> None:
        """Return requests taken by :meth:`take` but not dispatched (their keys are
        unchanged, so the order is restored exactly)."""
        for request in requests:
            self.push(request, now_s)

    def ordered(self, now_s: float) -> list[_Entry]:
        """Every queued request's entry (key, number, request, group), first to dispatch
        first (``O(n log n)``: for periodic passes, not for the dispatch path)."""
        entries = [e for heap in self._heaps.values() for e in heap if e[2].queue_entry == e[1]]
        entries.sort()  # by (key, number): the number is unique, so never further
        return entries

    def rekey(self, now_s: float) -> None:
        """Rebuild the heaps after request fields that ``key`` reads have changed."""
        for group, heap in self._heaps.items():
            self._heaps[group] = [(self.key(e[2]), e[1], e[2], group) for e in heap
                                  if e[2].queue_entry == e[1]]
            heapq.heapify(self._heaps[group])


class FifoPolicy(QueuePolicy):
    """First come, first served across the fleet; ignores ``priority`` and SLOs."""

    name = "fifo"


class PriorityPolicy(QueuePolicy):
    """Lower ``priority`` first, then arrival: the order of :class:`QueuedRequest`."""

    name = "priority"

    def key(self, request: QueuedRequest) -> tuple:
        return (request.priority, request.enqueued_s, request.seq)


class EdfPolicy(QueuePolicy):
    """Earliest deadline first (a request without an SLO has an infinite deadline), then
    priority, then arrival."""

    name = "edf"

    def key(self, request: QueuedRequest) -> tuple:
        return (request.deadline_s, request.priority, request.arrival_s or 0.0, request.seq)


class QlmPolicy(EdfPolicy):
    """QLM's order: EDF, with the requests the estimator's last pass found **late** (they
    miss their deadline even if served next) behind those that can still make it, so that
    one hopeless request does not make the ones behind it miss too.  Its re-plan is
    :class:`orchestrator.policies.qlm.QlmPlanner`."""

    name = "qlm"
    uses_late = True

    def key(self, request: QueuedRequest) -> tuple:
        return (request.late, request.deadline_s, request.priority, request.arrival_s or 0.0,
                request.seq)
