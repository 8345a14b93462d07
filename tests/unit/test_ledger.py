"""The in-flight ledger: one record of what is dispatched where."""

from __future__ import annotations

import pytest

from orchestrator.ledger import InFlightLedger
from orchestrator.queued import QueuedRequest
from replicas.types import RequestHeader


def q(i: int) -> QueuedRequest:
    return QueuedRequest(RequestHeader(f"r{i}", "m"), num_prompt_tokens=1, max_tokens=1)


def test_adds_pops_and_indexes_by_replica_in_dispatch_order() -> None:
    ledger = InFlightLedger()
    for i, replica in enumerate(["a", "b", "a", "a"]):
        ledger.add(q(i), replica, float(i))
    assert len(ledger) == 4 and "r2" in ledger and "r9" not in ledger
    assert list(ledger.on("a").items()) == [("r0", 0.0), ("r2", 2.0), ("r3", 3.0)]
    assert ledger.replicas() == ["a", "b"]
    d = ledger.pop("r2")
    assert d is not None and (d.replica_id, d.since_s, d.request.request_id) == ("a", 2.0, "r2")
    assert ledger.pop("r2") is None and list(ledger.on("a")) == ["r0", "r3"]
    assert ledger.pop("r1") is not None and ledger.replicas() == ["a"] and not ledger.on("b")
    assert ledger.drop_replica("a") == ["r0", "r3"] and len(ledger) == 0


def test_a_request_is_in_flight_once() -> None:
    ledger = InFlightLedger()
    ledger.add(q(0), "a", 0.0)
    with pytest.raises(AssertionError):
        ledger.add(q(0), "b", 1.0)
