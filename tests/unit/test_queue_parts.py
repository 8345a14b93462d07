"""The dispatcher's small collaborators on their own: expiry heap, held recovered
requests, tally, reconciliation."""

from __future__ import annotations

import pytest

from orchestrator.estimator import speed_from_profile
from orchestrator.expiry import ExpiryHeap, HeldRequests
from orchestrator.fleet import ReplicaState
from orchestrator.ledger import InFlightLedger
from orchestrator.outcomes import Outcome
from orchestrator.queued import QueuedRequest
from orchestrator.reconcile import Reconciler
from orchestrator.tally import Tally
from replicas.types import ReplicaLimits, ReplicaStats, RequestHeader, SLOSpec


def q(i: int, seq: int = 0, slo: SLOSpec | None = None) -> QueuedRequest:
    return QueuedRequest(RequestHeader(f"r{i}", "m", slo=slo), num_prompt_tokens=1,
                         max_tokens=1, seq=seq)


def test_expiry_heap_yields_due_entries_earliest_first_and_compacts() -> None:
    heap = ExpiryHeap()
    for i, at in enumerate([5.0, 1.0, 3.0]):
        heap.add(q(i, seq=i), at, queued=lambda rid: True, num_queued=3)
    assert list(heap.due(3.0)) == [(1, "r1"), (2, "r2")]
    assert list(heap.due(4.0)) == []
    assert list(heap.due(5.0)) == [(0, "r0")]
    # past 4·queued + 1024 entries, those no longer queued are dropped
    for i in range(1100):
        heap.add(q(i, seq=i), 10.0 + i, queued=lambda rid: rid == "r7", num_queued=0)
    # the 1,025th add compacted (only r7 is still queued); those added after it remain
    assert list(heap.due(1e9)) == [(7, "r7")] + [(i, f"r{i}") for i in range(1025, 1100)]


def test_held_requests_give_up_in_insertion_order() -> None:
    held = HeldRequests()
    held.hold(q(1), 10.0)
    held.hold(q(2), 5.0)
    held.hold(q(3), 20.0)
    assert "r2" in held and len(held) == 3
    assert held.get("r3") is not None and held.get("r9") is None
    assert held.overdue(10.0) == ["r1", "r2"]
    assert held.pop("r3") is not None and held.pop("r3") is None and len(held) == 0


def test_tally_counts_outcomes_attainment_and_rate() -> None:
    tally = Tally()
    slo = SLOSpec(class_name="interactive", ttft_ms=1000)
    tally.slo(q(1, slo=slo), met=True)
    tally.slo(q(2, slo=slo), met=False)
    tally.slo(q(3), met=False)  # no SLO: not counted
    assert tally.attainment == {"interactive": [1, 2]}
    assert tally.retry_after_s(10, 0.0, 1.0, 60.0) == 1.0  # no completions: the minimum
    for t in range(11):
        tally.completed(Outcome.COMPLETED, float(t))
    assert tally.outcomes[Outcome.COMPLETED] == 11
    assert tally.completion_rate_per_s(10.0) == pytest.approx(1.1)
    assert tally.retry_after_s(22, 10.0, 1.0, 60.0) == pytest.approx(20.0)
    assert tally.completion_rate_per_s(100.0) == 0.0  # the window moved past them


def _state(ledger: InFlightLedger, active: tuple[str, ...]) -> ReplicaState:
    stats = ReplicaStats("a", "d", "g", "m", ReplicaLimits(4, 4), active_request_ids=active)
    return ReplicaState(stats=stats, last_seen_s=0.0, speed=speed_from_profile(None, 4),
                        ledger=ledger)


def test_reconciler_releases_only_requests_unseen_for_the_grace() -> None:
    ledger = InFlightLedger()
    rec = Reconciler(ledger, lost_grace_s=5.0)
    for i in range(3):
        ledger.add(q(i), "a", 0.0)
    evicted = q(3)
    evicted.evicted = True
    ledger.add(evicted, "a", 0.0)
    assert rec.lost(_state(ledger, ("r0", "r1")), 4.0) == []  # within the grace
    lost = rec.lost(_state(ledger, ("r0",)), 6.0)  # r1 seen at 4 s; r2 never
    assert [d.request.request_id for d in lost] == ["r2"]
    # an evicted request waits three graces for its caller's retry
    lost = rec.lost(_state(ledger, ("r0",)), 16.0)
    assert [d.request.request_id for d in lost] == ["r1", "r2", "r3"]
    # a report listing a request released moments ago is not unknown work
    ledger.pop("r0")
    rec.released("r0", 16.0)
    state = _state(ledger, ("r0", "zz"))
    rec.lost(state, 17.0)
    assert state.num_unknown_active == 1
