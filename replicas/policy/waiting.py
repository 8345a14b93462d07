"""The engine's waiting queue ordered by :class:`~replicas.policy.starvation.RankKey`.

It has the method set of vLLM's ``RequestQueue`` (add / pop / peek / prepend / remove,
len, bool, iteration in order) but imports no vLLM: requests are duck-typed, and the key
of each comes from ``key_of(request)``, so unit tests drive it with plain objects.  Keys
are taken when a request enters and refreshed by :meth:`rekey` (the scheduler calls it
every k steps and when the starvation rule promotes someone)."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from replicas.policy.starvation import RankKey

R = TypeVar("R")


class RankedQueue(Generic[R]):
    def __init__(self, key_of: Callable[[Any], RankKey]) -> None:
        self._key_of = key_of
        self._items: list[tuple[RankKey, R]] = []

    def add_request(self, request: R) -> None:
        bisect.insort(self._items, (self._key_of(request), request), key=lambda kv: kv[0])

    def pop_request(self) -> R:
        if not self._items:
            raise IndexError("pop from an empty queue")
        return self._items.pop(0)[1]

    def peek_request(self) -> R:
        if not self._items:
            raise IndexError("peek at an empty queue")
        return self._items[0][1]

    def prepend_request(self, request: R) -> None:
        self.add_request(request)

    def prepend_requests(self, requests: Iterable[R]) -> None:
        for request in requests:
            self.add_request(request)

    def remove_request(self, request: R) -> None:
        for i, (_, r) in enumerate(self._items):
            if r is request:
                del self._items[i]
                return
        raise ValueError("request not in queue")

    def remove_requests(self, requests: Iterable[R]) -> None:
        gone = {id(r) for r in requests}
        self._items = [kv for kv in self._items if id(kv[1]) not in gone]

    def rekey(self) -> None:
        """Recompute every key (scores and promotions may have changed) and re-sort."""
        self._items = sorted(((self._key_of(r), r) for _, r in self._items), key=lambda kv: kv[0])

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[R]:
        return iter([r for _, r in self._items])
