"""The queue manager's asyncio layer with an injected clock (no Ray)."""

import asyncio

import pytest

from orchestrator.config import QueueConfig
from orchestrator.errors import (
    DuplicateRequestError,
    DurabilityUnavailableError,
    QueueTimeoutError,
)
from orchestrator.outcomes import Outcome
from orchestrator.queue_manager import QueueService
from orchestrator.queued import QueuedRequest
from orchestrator.store import MemoryStore, StoreUnavailableError
from replicas.types import RequestHeader
from tests.unit.fakes import FakeClock, replica_stats


def req(i: int) -> QueuedRequest:
    return QueuedRequest(RequestHeader(f"r{i}", "m"), num_prompt_tokens=4, max_tokens=4)


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
    assert not waiting.done() and svc.dispatcher.num_queued == 1
    svc.complete("r0", Outcome.COMPLETED)  # room again: r1 is dispatched
    assert (await waiting).request_id == "r1"


async def test_cancelled_waiter_leaves_the_queue():
    svc, waiting = await one_waiting()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert svc.dispatcher.num_queued == 0
    svc.complete("r0", Outcome.COMPLETED)
    assert svc.dispatcher.num_in_flight == 0


async def test_expired_waiter_gets_a_typed_timeout():
    clock = FakeClock()
    svc, waiting = await one_waiting(clock, queue_timeout_s=5, replica_timeout_s=100)
    clock.advance(6)
    svc.tick()
    with pytest.raises(QueueTimeoutError) as err:
        await waiting
    assert err.value.status_code == 503 and svc.dispatcher.num_queued == 0


async def test_retry_releases_the_failed_assignment_and_requeues_in_one_step():
    svc = QueueService(QueueConfig(), clock=FakeClock())
    svc.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    svc.report(replica_stats("b", max_num_seqs=1, max_waiting=0))
    first = await svc.enqueue(req(0))
    retried = req(0)
    retried.avoid_replica = first.replica_id
    again = await svc.enqueue(retried, retry=True)
    assert again.request_id == "r0" and svc.dispatcher.num_in_flight == 1
    assert svc.dispatcher.outcomes[Outcome.FAILED] == 1
    assert again.replica_id != first.replica_id


async def test_cancel_resolves_a_waiting_enqueue():
    svc, waiting = await one_waiting()
    assert svc.cancel("r1")
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert svc.dispatcher.num_queued == 0


# ---- durability (the store's own behaviour against real Redis: tests/integration) -------
class DownStore(MemoryStore):
    """A store whose durable backend is unreachable (same interface as the real ones)."""

    async def put(self, request, *, required: bool) -> bool:
        if required:
            raise StoreUnavailableError("redis did not answer")
        await super().put(request, required=False)
        return False


def durable_config(**cfg) -> QueueConfig:
    return QueueConfig(durability={"mode": "required", "redis_url": "redis://127.0.0.1:1/0"},
                       **cfg)


async def test_required_durability_without_a_store_is_503_and_queues_nothing():
    svc = QueueService(durable_config(), clock=FakeClock(), store=DownStore())
    svc.report(replica_stats("a"))
    with pytest.raises(DurabilityUnavailableError) as err:
        await svc.enqueue(req(0))
    assert err.value.status_code == 503 and err.value.retry_after_s
    assert svc.dispatcher.num_queued == 0 and svc.dispatcher.num_in_flight == 0
    assert svc.dispatcher.outcomes[Outcome.REJECTED_UNDURABLE] == 1


async def test_best_effort_durability_accepts_in_memory_and_counts_it():
    svc = QueueService(QueueConfig(), clock=FakeClock(), store=DownStore())
    svc.report(replica_stats("a"))
    assert (await svc.enqueue(req(0))).replica_id == "a"
    assert svc.num_nondurable == 1 and svc.stats()["durability"]["nondurable_admissions"] == 1


async def test_a_restarted_service_recovers_queued_and_dispatched_requests():
    store, clock = MemoryStore(), FakeClock()
    old = QueueService(QueueConfig(replica_timeout_s=100), clock=clock, store=store)
    old.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    first = await old.enqueue(req(0))
    waiting = [asyncio.ensure_future(old.enqueue(req(i))) for i in (1, 2)]
    await asyncio.sleep(0)
    assert [s.state for s in await store.load()] == ["dispatched", "queued", "queued"]
    old.store = MemoryStore()  # the old actor dies: it writes nothing more, and
    for w in waiting:  # its callers lose their calls
        w.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    new = QueueService(QueueConfig(replica_timeout_s=100), clock=clock, store=store)
    assert await new.start() == 3
    new.report(replica_stats("a", max_num_seqs=1, max_waiting=0, active=("r0",)))
    # the dispatched one still holds the slot; its caller re-attaches to its assignment
    again = await new.enqueue(req(0), resume=True)
    assert again.replica_id == first.replica_id
    r2 = asyncio.ensure_future(new.enqueue(req(2), resume=True))
    r1 = asyncio.ensure_future(new.enqueue(req(1), resume=True))
    await asyncio.sleep(0)
    assert not r1.done() and not r2.done()
    new.complete("r0", Outcome.COMPLETED)
    assert (await r1).request_id == "r1" and not r2.done()  # admission order kept
    new.complete("r1", Outcome.COMPLETED)
    assert (await r2).request_id == "r2"
    new.complete("r2", Outcome.COMPLETED)
    assert await store.load() == []
    with pytest.raises(DuplicateRequestError) as err:  # a replayed X-Request-Id
        await new.enqueue(req(1))
    assert err.value.status_code == 409 and "already finished" in err.value.message


async def test_resume_of_an_unknown_request_admits_it_afresh():
    svc = QueueService(QueueConfig(), clock=FakeClock())
    svc.report(replica_stats("a"))
    assert (await svc.enqueue(req(7), resume=True)).request_id == "r7"
