"""The queue manager's in-flight ledger: every request dispatched and not yet finished,
in one place — which replica holds it and since when.  A replica's room, reconciliation
with what it reports, eviction and recovery all read it; a request recovered from the
store whose replica has not reported yet is simply an entry for a replica not (yet)
registered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.queued import QueuedRequest

_EMPTY: Mapping[str, float] = {}


@dataclass(slots=True)
class Dispatch:
    request: QueuedRequest
    replica_id: str
    #: When it was dispatched there.
    since_s: float
    #: When its replica last reported serving it (the dispatch time until it does).
    seen_s: float


class InFlightLedger:
    def __init__(self) -> None:
        self._by_id: dict[str, Dispatch] = {}
        #: replica -> {request id: since}, in dispatch order (an index of ``_by_id``)
        self._by_replica: dict[str, dict[str, float]] = {}

    # ---- changes ------------------------------------------------------------------------
    def add(self, request: QueuedRequest, replica_id: str, since_s: float) -> None:
        rid = request.request_id
        assert rid not in self._by_id, rid
        self._by_id[rid] = Dispatch(request, replica_id, since_s, since_s)
        self._by_replica.setdefault(replica_id, {})[rid] = since_s

    def pop(self, request_id: str) -> Dispatch | None:
        """Forget a dispatch; None if the request was not in flight."""
        d = self._by_id.pop(request_id, None)
        if d is not None:
            held = self._by_replica[d.replica_id]
            del held[request_id]
            if not held:
                del self._by_replica[d.replica_id]
        return d

    def seen(self, replica_id: str, active: set[str], now_s: float) -> None:
        """The replica reported serving ``active``: their last-seen time is now."""
        for rid in self._by_replica.get(replica_id, _EMPTY):
            if rid in active:
                self._by_id[rid].seen_s = now_s

    def drop_replica(self, replica_id: str) -> list[str]:
        """Forget every dispatch to a replica (it was removed); their ids, sorted."""
        ids = sorted(self._by_replica.pop(replica_id, {}))
        for rid in ids:
            del self._by_id[rid]
        return ids

    # ---- reads --------------------------------------------------------------------------
    def get(self, request_id: str) -> Dispatch | None:
        return self._by_id.get(request_id)

    def request(self, request_id: str) -> QueuedRequest | None:
        d = self._by_id.get(request_id)
        return d.request if d is not None else None

    def on(self, replica_id: str) -> Mapping[str, float]:
        """The requests a replica holds: {request id: dispatched at}, in dispatch order."""
        return self._by_replica.get(replica_id, _EMPTY)

    def replicas(self) -> list[str]:
        """Replicas holding at least one request, in the order they first did."""
        return list(self._by_replica)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)
