"""The queue manager's asyncio layer with an injected clock (no Ray)."""

import asyncio

import pytest

from orchestrator.config import QueueConfig
from orchestrator.errors import QueueTimeoutError
from orchestrator.outcomes import Outcome
from orchestrator.queue_manager import QueueService
from orchestrator.queue_policy import QueuedRequest
from tests.unit.fakes import FakeClock, replica_stats


def req(i: int) -> QueuedRequest:
    return QueuedRequest(request_id=f"r{i}", model="m", num_prompt_tokens=4, max_tokens=4)


async def one_waiting(clock=None, **config) -> tuple[QueueService, asyncio.Future]:
    """A service whose only slot r0 holds, with r1's enqueue waiting for room."""
    svc = QueueService(QueueConfig(**config), clock=clock or FakeClock())
    svc.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    await svc.enqueue(req(0))
    waiting = asyncio.ensure_future(svc.enqueue(req(1)))
    await asyncio.sleep(0)
    return svc, waiting


async def test_enqueue_waits_for_room_then_gets_an_assignment():
    clock = FakeClock()
    svc = QueueService(QueueConfig(), clock=clock)
    svc.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    first = await svc.enqueue(req(0))
    assert first.replica_id == "a"
    waiting = asyncio.ensure_future(svc.enqueue(req(1)))
    await asyncio.sleep(0)
    assert not waiting.done() and svc.core.num_queued == 1
    svc.complete("r0", Outcome.COMPLETED)  # room again: r1 is dispatched
    assert (await waiting).request_id == "r1"


async def test_cancelled_waiter_leaves_the_queue():
    svc, waiting = await one_waiting()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert svc.core.num_queued == 0
    svc.complete("r0", Outcome.COMPLETED)
    assert svc.core.num_in_flight == 0


async def test_expired_waiter_gets_a_typed_timeout():
    clock = FakeClock()
    svc, waiting = await one_waiting(clock, queue_timeout_s=5, replica_timeout_s=100)
    clock.advance(6)
    svc.tick()
    with pytest.raises(QueueTimeoutError) as err:
        await waiting
    assert err.value.status_code == 503 and svc.core.num_queued == 0


async def test_retry_releases_the_failed_assignment_and_requeues_in_one_step():
    svc = QueueService(QueueConfig(), clock=FakeClock())
    svc.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    svc.report(replica_stats("b", max_num_seqs=1, max_waiting=0))
    first = await svc.enqueue(req(0))
    retried = req(0)
    retried.extra["avoid_replica"] = first.replica_id
    again = await svc.enqueue(retried, retry=True)
    assert again.request_id == "r0" and svc.core.num_in_flight == 1
    assert svc.core.outcomes[Outcome.FAILED] == 1
    assert again.replica_id != first.replica_id


async def test_cancel_resolves_a_waiting_enqueue():
    svc, waiting = await one_waiting()
    assert svc.cancel("r1")
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert svc.core.num_queued == 0
