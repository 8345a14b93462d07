"""Ordering policies of the global queue: one small class per policy behind one seam.

A policy only orders; admission limits, placement and room checks belong to the
dispatcher.  The natural order of queued requests is defined once, on
:class:`QueuedRequest` (priority, then arrival, then sequence number, as vLLM's
``Request.__lt__``); a policy either uses it or documents the key it uses instead.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from predictor_service.types import Prediction
from replicas.types import SLOSpec


@dataclass(eq=False, slots=True)
class QueuedRequest:
    """A request waiting in the global queue (no prompt tokens: the queue is control plane)."""

    request_id: str
    model: str
    num_prompt_tokens: int
    max_tokens: int
    priority: int = 0
    slo: SLOSpec | None = None
    session_id: str | None = None
    #: The predictor's estimate at arrival (None when the predictor is disabled).
    prediction: Prediction | None = None
    #: Set by the dispatcher at admission.
    enqueued_s: float = 0.0
    seq: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def __lt__(self, other: QueuedRequest) -> bool:
        return (self.priority, self.enqueued_s, self.seq) < (other.priority, other.enqueued_s, other.seq)


class QueuePolicy(ABC):
    """Holds queued requests and yields them in dispatch order."""

    name: ClassVar[str]

    @abstractmethod
    def push(self, request: QueuedRequest, now_s: float) -> None: ...

    @abstractmethod
    def remove(self, request_id: str) -> QueuedRequest | None:
        """Take a request out (dispatched, cancelled or expired); None if absent."""

    @abstractmethod
    def ordered(self, now_s: float) -> Iterator[QueuedRequest]:
        """Queued requests, first to dispatch first.  Callers may remove while iterating
        only after materialising the iterator."""

    @abstractmethod
    def __len__(self) -> int: ...

    def __contains__(self, request_id: str) -> bool:
        return any(r.request_id == request_id for r in self.ordered(0.0))


class FifoPolicy(QueuePolicy):
    """First come, first served across the fleet; ignores ``priority``."""

    name = "fifo"

    def __init__(self) -> None:
        self._items: OrderedDict[str, QueuedRequest] = OrderedDict()

    def push(self, request: QueuedRequest, now_s: float) -> None:
        self._items[request.request_id] = request

    def remove(self, request_id: str) -> QueuedRequest | None:
        return self._items.pop(request_id, None)

    def ordered(self, now_s: float) -> Iterator[QueuedRequest]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._items


class PriorityPolicy(QueuePolicy):
    """Lower ``priority`` first, then arrival: the order of :class:`QueuedRequest`."""

    name = "priority"

    def __init__(self) -> None:
        self._heap: list[QueuedRequest] = []
        self._live: dict[str, QueuedRequest] = {}

    def push(self, request: QueuedRequest, now_s: float) -> None:
        self._live[request.request_id] = request
        heapq.heappush(self._heap, request)

    def remove(self, request_id: str) -> QueuedRequest | None:
        request = self._live.pop(request_id, None)
        if request is not None and len(self._heap) > 2 * len(self._live) + 16:
            self._heap = [r for r in self._heap if r.request_id in self._live]
            heapq.heapify(self._heap)
        return request

    def ordered(self, now_s: float) -> Iterator[QueuedRequest]:
        return iter(sorted(r for r in self._heap if self._live.get(r.request_id) is r))

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._live


QUEUE_POLICIES: dict[str, type[QueuePolicy]] = {p.name: p for p in (FifoPolicy, PriorityPolicy)}


def make_queue_policy(name: str) -> QueuePolicy:
    try:
        return QUEUE_POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown queue policy {name!r}; known: {sorted(QUEUE_POLICIES)}") from None
