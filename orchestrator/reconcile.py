"""Reconciliation of the in-flight ledger with what a replica reports serving.

A request the replica has not listed for ``lost_grace_s`` is lost (its completion notice
went missing, or its client left before its stream started) and is released.  The grace
counts from the last report that listed it, so a request that just ended on its replica
is released by its caller, with its outcome, not as lost.  Requests released recently are
remembered for the same grace, so that a report still listing them is not taken for
work the queue manager does not know of."""

from __future__ import annotations

from collections import deque

from orchestrator.fleet import ReplicaState
from orchestrator.ledger import Dispatch, InFlightLedger


class Reconciler:
    def __init__(self, ledger: InFlightLedger, lost_grace_s: float) -> None:
        self._ledger = ledger
        self._grace_s = lost_grace_s
        self._recent: deque[tuple[float, str]] = deque()  # (time, id) of releases
        self._recent_ids: set[str] = set()

    def released(self, request_id: str, now_s: float) -> None:
        self._recent.append((now_s, request_id))
        self._recent_ids.add(request_id)

    def lost(self, state: ReplicaState, now_s: float) -> list[Dispatch]:
        """Take the replica's report: refresh last-seen times and the count of active
        requests it serves that the ledger does not hold; return the lost dispatches."""
        active = set(state.stats.active_request_ids)
        while self._recent and now_s - self._recent[0][0] > self._grace_s:
            self._recent_ids.discard(self._recent.popleft()[1])
        state.num_unknown_active = len(active - state.in_flight.keys() - self._recent_ids)
        self._ledger.seen(state.replica_id, active, now_s)
        lost = []
        for rid in state.in_flight:
            d = self._ledger.get(rid)
            if (d is not None and rid not in active and now_s - d.seen_s > self._grace_s
                    and not self._evicting(d, now_s)):
                lost.append(d)
        return lost

    def _evicting(self, d: Dispatch, now_s: float) -> bool:
        """An evicted request waits for its caller's retry (not "lost"), for a while."""
        return d.request.evicted and now_s - d.since_s < 3 * self._grace_s
