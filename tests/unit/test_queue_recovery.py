"""Regression tests for defects an independent review found in the global queue: recovery
after a restart, leaks, QLM's plan under edge cases, eviction against reconciliation, and
the store left consistent on every path (plain objects, injected clock, no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.config import DurabilityConfig, QueueConfig
from orchestrator.errors import NoHealthyReplicaError
from orchestrator.journal import Finished
from orchestrator.outcomes import Outcome
from orchestrator.queue_manager import QueueService
from orchestrator.store import MemoryStore, make_store
from tests.unit.fakes import FakeClock, replica_stats
from tests.unit.test_qlm_queue import CLASSES, make, req, stats


def test_recovered_requests_nobody_claims_do_not_block_new_ones():
    old, clock = make("fifo")
    old.report(stats("a", seqs=1))
    recovered = [req(i) for i in range(80)]
    for r in recovered:
        old.admit(r)
    d, clock2 = make("fifo")
    clock2.now_s = clock.now_s
    d.report(stats("a", seqs=4))
    for r in recovered:
        d.restore_queued(r, reattach_grace_s=30)
    d.admit(req(100))
    assert [a.request_id for a in d.dispatch()] == ["r100"]
    assert d.num_queued == 80
    clock2.advance(31)
    d.expire()
    assert d.num_queued == 0 and d.outcomes[Outcome.ABANDONED] == 80


def test_a_recovered_request_whose_replica_never_returns_is_released():
    d, clock = make("fifo", lost_grace_s=5, replica_timeout_s=5)
    d.restore_dispatched(req(0), "dead-replica")
    for _ in range(3):
        clock.advance(5)
        d.report(stats("new-replica", seqs=1))
        d.expire()
    assert d.num_in_flight == 0 and Finished("r0", Outcome.FAILED) in d.journal
    d.assess(req(0))  # its id is free again


def test_qlm_replan_with_a_group_without_deadline_does_not_fail():
    d, _ = make("qlm")
    d.report(stats("a", seqs=1, tps=5.0, running=1))
    d.admit(req(0, "tight", tokens=500))
    d.dispatch()
    d.admit(req(1, "tight", tokens=500))  # predicted miss: re-plan
    d.admit(req(2, None, tokens=10))  # no SLO: an infinite deadline
    done = d.run_pass(force=True)
    assert done["replanned"] == 1 and set(done["assignment"]) == {"m/tight", "m/none"}


def test_under_a_plan_the_replica_that_helps_out_runs_what_it_took():
    d, _ = make("qlm", placement="estimated-completion")
    d.report(stats("F", seqs=2, tps=1000.0, running=1))
    d.report(stats("S", seqs=4, tps=5.0, running=1))
    for r in d.replicas:
        r.speed.saturated_tokens_per_s = r.stats.output_tokens_per_s
    for i in range(100, 106):
        d.admit(req(i, "batch", tokens=50))
    d.dispatch()
    for i in range(1, 6):
        d.admit(req(i, "batch", tokens=50))
    for i in range(6, 12):
        d.admit(req(i, "tight", tokens=1500))
    d.run_pass(force=True)
    assert d.snapshot()["plan"]["assignment"]["m/tight"] == "F"
    on_f = list(d.ledger.on("F"))[:1]
    on_s = list(d.ledger.on("S"))[:3]
    for rid in on_f + on_s:
        d.complete(rid)
    got = [(d.lookup(a.request_id).slo_class, a.replica_id) for a in d.dispatch()]
    assert ("tight", "F") in got  # F's freed slot goes to the urgent group planned for it
    assert all(rep == "S" for cls, rep in got if cls == "batch")


def test_a_late_request_is_not_counted_ahead_of_new_admissions():
    d, clock = make("qlm", estimator_z=0.0)
    d.report(stats("a", seqs=1, tps=100.0, running=1))
    d.replicas["a"].speed.saturated_tokens_per_s = 100.0
    d.admit(req(0, "batch", tokens=10))
    d.dispatch()
    hopeless = req(1, "tight", tokens=5000)
    d.admit(hopeless)
    clock.advance(3)  # its 2 s TTFT deadline passed
    d.run_pass(force=True)
    assert hopeless.late
    probe = req(2, "standard", tokens=10)
    d.assess(probe)
    assert probe.est_wait_s < 1.0  # the 50 s of hopeless work is not ahead


async def test_an_evicted_request_is_kept_for_its_retry_past_the_lost_grace():
    clock = FakeClock()
    svc = QueueService(QueueConfig(policy="edf", default_slo_class=None, replica_timeout_s=1e6,
                                   lost_grace_s=10), clock=clock, slo_classes=CLASSES)
    svc.report(stats("busy", seqs=1, waiting_room=1, tps=5.0, running=1))
    await svc.enqueue(req(0, "batch", tokens=10))
    await svc.enqueue(req(1, "batch", tokens=10))
    svc.dispatcher.replicas["busy"].speed.mean_request_tokens = 100_000.0
    svc.report(stats("idle", seqs=4, tps=100.0))
    clock.advance(11)
    busy = dict(seqs=1, waiting_room=1, tps=5.0, running=1)
    svc.report(stats("busy", num_waiting=1, active=("r0", "r1"), unstarted=("r1",), **busy))
    svc.dispatcher.run_pass(force=True)
    assert svc.report(stats("busy", num_waiting=1, active=("r0", "r1"), unstarted=("r1",),
                            **busy)) == ["r1"]
    clock.advance(0.5)
    svc.report(stats("busy", active=("r0",), **busy))  # aborted: before the retry arrives
    back = req(1, "batch", tokens=10, arrival=1000.0)
    back.evicted, back.avoid_replica = True, "busy"
    assert (await svc.enqueue(back, retry=True)).replica_id == "idle"
    assert svc.dispatcher.outcomes[Outcome.EVICTED] == 1


class SlowStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.writing = asyncio.Event()

    async def put(self, request, *, required: bool) -> bool:
        written = await super().put(request, required=required)
        self.writing.set()
        await asyncio.sleep(0.01)  # the Redis round trip
        return written


async def test_a_caller_gone_during_the_store_write_leaves_no_record():
    store = SlowStore()
    svc = QueueService(QueueConfig(), clock=FakeClock(), store=store)
    svc.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    task = asyncio.ensure_future(svc.enqueue(req(0)))
    await asyncio.wait_for(store.writing.wait(), 5)  # the caller goes while the write runs
    assert [s.request.request_id for s in await store.load()] == [req(0).request_id]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await store.load() == [] and svc.dispatcher.num_queued == 0


async def test_a_refused_retry_leaves_no_record():
    store = MemoryStore()
    svc = QueueService(QueueConfig(), clock=FakeClock(), store=store)
    svc.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    await svc.enqueue(req(0))
    svc.report(replica_stats("a", max_num_seqs=1, max_waiting=0, alive=False))
    with pytest.raises(NoHealthyReplicaError) as err:
        await svc.enqueue(req(0), retry=True)
    assert err.value.status_code == 503
    svc.complete("r0", Outcome.FAILED)
    assert await store.load() == [] and await store.done_outcome("r0") == "failed"


async def test_the_manager_starts_while_redis_is_unreachable():
    q = QueueConfig(durability=DurabilityConfig(
        mode="best_effort", redis_url="redis://127.0.0.1:1/0", write_timeout_s=0.2))
    svc = QueueService(q, store=make_store(q.durability.store_config()))
    try:
        assert await svc.start() == -1  # serving; recovery retries in the background
        svc.report(replica_stats("a"))
        assert (await svc.enqueue(req(0))).replica_id == "a"  # best effort: in memory
        assert svc.num_nondurable == 1
    finally:
        svc._recovering.cancel()
        await svc.store.close()


def test_a_recovered_request_completed_before_its_replica_reports_frees_its_room():
    """Found by the kill-under-load test: the completion arrived while the request was
    an orphan; its room must not be held forever once the replica reports."""
    d, clock = make("fifo", lost_grace_s=5)
    d.restore_dispatched(req(0), "a")
    assert d.complete("r0")  # the ingress's notice, before replica "a" reported
    d.report(stats("a", seqs=1))
    d.admit(req(1))
    assert [a.request_id for a in d.dispatch()] == ["r1"]


def test_an_in_flight_request_its_replica_never_reports_is_released_by_reconciliation():
    d, clock = make("fifo", lost_grace_s=5)
    d.report(stats("a", seqs=1))
    d.ledger.add(req(99), "a", clock())  # room held for a request the replica never saw
    d.admit(req(1))
    assert d.dispatch() == []
    clock.advance(6)
    d.report(stats("a", seqs=1))
    assert [a.request_id for a in d.dispatch()] == ["r1"]


def test_a_recovered_request_retried_before_its_replica_reports_frees_its_room():
    """The same room leak as above, on the retry path: every release goes through one
    place now."""
    d, clock = make("fifo", lost_grace_s=5)
    d.restore_dispatched(req(0), "a")
    d.release_for_retry("r0", Outcome.FAILED)
    d.report(stats("a", seqs=1))
    d.admit(req(1))
    assert [a.request_id for a in d.dispatch()] == ["r1"]
    assert "r0" not in d.ledger and list(d.ledger.on("a")) == ["r1"]


def test_the_lost_grace_counts_from_the_last_report_that_listed_the_request():
    """A request that ran for a while and just ended on its replica is not "lost" at the
    replica's next report: its caller's release (with the outcome) comes first."""
    d, clock = make("fifo", lost_grace_s=5)
    d.report(stats("a", seqs=1))
    d.admit(req(0))
    assert [a.request_id for a in d.dispatch()] == ["r0"]
    for _ in range(10):  # it runs 10 s, listed by every report
        clock.advance(1)
        d.report(stats("a", seqs=1, active=("r0",)))
    clock.advance(1)
    d.report(stats("a", seqs=1))  # gone from the replica (its client went away)
    assert "r0" in d.ledger  # not released as lost: 1 s since it was last seen
    assert d.cancel("r0") and d.outcomes[Outcome.CANCELLED] == 1
    d.admit(req(1))
    assert [a.request_id for a in d.dispatch()] == ["r1"]
    clock.advance(6)
    d.report(stats("a", seqs=1))  # r1 never listed: lost once the grace has passed
    assert "r1" not in d.ledger and d.outcomes[Outcome.CANCELLED] == 1
