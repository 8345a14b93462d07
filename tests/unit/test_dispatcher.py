import pytest

from orchestrator.config import QueueConfig
from orchestrator.dispatcher import Dispatcher
from orchestrator.errors import (
    DuplicateRequestError,
    NoHealthyReplicaError,
    OverloadedError,
)
from orchestrator.outcomes import Outcome
from orchestrator.queued import QueuedRequest
from replicas.types import RequestHeader
from tests.unit.fakes import FakeClock, replica_stats


def req(i: int, model: str = "m", priority: int = 0) -> QueuedRequest:
    return QueuedRequest(RequestHeader(f"r{i}", model, priority=priority),
                         num_prompt_tokens=10, max_tokens=10)


def make(**cfg) -> tuple[Dispatcher, FakeClock]:
    clock = FakeClock()
    return Dispatcher(QueueConfig(**cfg), clock), clock


def test_dispatches_in_fifo_order_only_while_replicas_have_room():
    d, _ = make(max_queued=10)
    d.report(replica_stats("a", max_num_seqs=1, max_waiting=1))  # room for 2
    for i in range(5):
        d.admit(req(i))
    got = d.dispatch()
    assert [a.request_id for a in got] == ["r0", "r1"]
    assert d.num_queued == 3 and d.num_in_flight == 2
    assert d.dispatch() == []  # no room: nothing more
    assert d.complete("r0")
    assert [a.request_id for a in d.dispatch()] == ["r2"]


def test_reported_engine_backlog_blocks_dispatch():
    d, _ = make()
    d.report(replica_stats("a", max_num_seqs=4, max_waiting=1, num_waiting=2))
    d.admit(req(0))
    assert d.dispatch() == []
    d.report(replica_stats("a", max_num_seqs=4, max_waiting=1, num_waiting=0))
    assert [a.request_id for a in d.dispatch()] == ["r0"]


def test_overload_raises_with_retry_after_and_does_not_queue():
    d, _ = make(max_queued=2, retry_after_min_s=2.0)
    d.report(replica_stats("a"))
    d.admit(req(0))
    d.admit(req(1))
    with pytest.raises(OverloadedError) as err:
        d.admit(req(2))
    assert err.value.status_code == 429 and err.value.retry_after_s >= 2.0
    assert d.num_queued == 2 and d.outcomes[Outcome.REJECTED_OVERLOAD] == 1


def test_no_healthy_replica_for_model_is_503():
    d, clock = make(replica_timeout_s=5)
    with pytest.raises(NoHealthyReplicaError):
        d.admit(req(0))
    d.report(replica_stats("a", model="other"))
    with pytest.raises(NoHealthyReplicaError):
        d.admit(req(1))
    d.report(replica_stats("b", model="m", alive=False))
    with pytest.raises(NoHealthyReplicaError):
        d.admit(req(2))
    d.report(replica_stats("c", model="m"))
    d.admit(req(3))
    clock.advance(6)  # c went silent
    with pytest.raises(NoHealthyReplicaError):
        d.admit(req(4))


def test_placement_prefers_least_loaded_then_faster_replica():
    d, _ = make()
    d.report(replica_stats("slow", gpu_class="small", max_num_seqs=2, max_waiting=0, tokens_per_s=10))
    d.report(replica_stats("fast", gpu_class="large", max_num_seqs=2, max_waiting=0, tokens_per_s=50))
    for i in range(4):
        d.admit(req(i))
    got = [a.gpu_class for a in d.dispatch()]
    assert got[0] == "large"  # tie on load: faster first
    assert sorted(got) == ["large", "large", "small", "small"]


def test_model_routing_skips_requests_without_a_replica_with_room():
    d, _ = make()
    d.report(replica_stats("a", model="m1", max_num_seqs=1, max_waiting=0))
    d.report(replica_stats("b", model="m2", max_num_seqs=1, max_waiting=0))
    d.admit(req(0, "m1"))
    d.admit(req(1, "m1"))
    d.admit(req(2, "m2"))
    assert sorted(a.request_id for a in d.dispatch()) == ["r0", "r2"]


def test_cancel_queued_and_in_flight_requests():
    d, _ = make()
    d.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    d.admit(req(0))
    d.admit(req(1))
    d.dispatch()
    assert d.cancel("r1") and d.num_queued == 0  # queued
    assert d.cancel("r0") and d.num_in_flight == 0  # in flight
    assert not d.cancel("r0")
    assert d.outcomes[Outcome.CANCELLED] == 2


def test_expire_and_reap():
    d, clock = make(queue_timeout_s=10, replica_timeout_s=3)
    d.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    d.admit(req(0))
    d.admit(req(1))
    d.dispatch()
    clock.advance(11)
    assert [(r.request_id, slo) for r, slo in d.expire()] == [("r1", False)]
    assert d.reap_replicas() == ["a"]
    assert d.num_in_flight == 0 and d.replicas.healthy(clock()) == []


def test_priority_policy_orders_by_priority_then_arrival():
    d2, clock2 = make(policy="priority")
    d2.report(replica_stats("a", max_num_seqs=10, max_waiting=0))
    for i, prio in enumerate([5, 0, 5, -1]):
        d2.admit(req(i, priority=prio))
        clock2.advance(1)
    assert [a.request_id for a in d2.dispatch()] == ["r3", "r1", "r0", "r2"]


def test_duplicate_request_id_is_refused():
    d, _ = make()
    d.report(replica_stats("a"))
    d.admit(req(0))
    with pytest.raises(DuplicateRequestError) as err:
        d.admit(req(0))
    assert err.value.status_code == 409 and "r0" in err.value.message


def test_retry_after_follows_drain_rate():
    d, clock = make(max_queued=100, retry_after_min_s=1, retry_after_max_s=30)
    d.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    for i in range(40):
        d.admit(req(i))
    for _ in range(30):  # complete one request every 0.5 s: ~2/s
        (a,) = d.dispatch()
        clock.advance(0.5)
        d.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
        d.complete(a.request_id)
    # 10 requests left at ~2 per second
    assert 4.0 <= d.retry_after_s() <= 6.0


def test_retry_after_is_not_fooled_by_batched_completions():
    d, clock = make(max_queued=200, retry_after_min_s=1, retry_after_max_s=60)
    d.report(replica_stats("a", max_num_seqs=10, max_waiting=0))
    for i in range(120):
        d.admit(req(i))
    for _ in range(10):  # ten completions at once every second: 10/s
        done = d.dispatch()
        clock.advance(1.0)
        d.report(replica_stats("a", max_num_seqs=10, max_waiting=0))
        for a in done:
            d.complete(a.request_id)
    # 20 left queued (120 - 100 dispatched) at ~10/s: about 2 s, not the minimum of 1
    assert 1.5 <= d.retry_after_s() <= 3.0


def test_lost_completion_notices_are_reconciled_from_replica_reports():
    d, clock = make(lost_grace_s=10)
    d.report(replica_stats("a", max_num_seqs=2, max_waiting=0))
    d.admit(req(0))
    d.admit(req(1))
    d.dispatch()
    stats = replica_stats("a", max_num_seqs=2, max_waiting=0)
    stats.active_request_ids = ("r0",)  # r1 finished but its notice never arrived
    clock.advance(5)
    d.report(stats)
    assert d.num_in_flight == 2  # within the grace period: kept
    clock.advance(6)
    d.report(stats)
    assert d.num_in_flight == 1 and d.outcomes[Outcome.FAILED] == 0
    assert not d.complete("r1")  # the late notice finds nothing to release


def test_requests_a_restarted_manager_does_not_know_still_hold_room():
    d, _ = make()
    stats = replica_stats("a", max_num_seqs=1, max_waiting=1)
    stats.active_request_ids = ("old-1", "old-2")  # running since before the restart
    d.report(stats)
    d.admit(req(0))
    assert d.dispatch() == []
    stats2 = replica_stats("a", max_num_seqs=1, max_waiting=1)
    stats2.active_request_ids = ("old-1",)
    d.report(stats2)
    assert [a.request_id for a in d.dispatch()] == ["r0"]


def test_completed_requests_in_a_stale_report_do_not_block_room():
    d, _ = make()
    d.report(replica_stats("a", max_num_seqs=1, max_waiting=0))
    d.admit(req(0))
    d.admit(req(1))
    (a,) = d.dispatch()
    d.complete(a.request_id)
    stale = replica_stats("a", max_num_seqs=1, max_waiting=0)
    stale.active_request_ids = ("r0",)  # the replica's report predates r0's completion
    d.report(stale)
    assert [x.request_id for x in d.dispatch()] == ["r1"]


def test_a_retry_avoids_the_replica_that_failed_it():
    d, _ = make()
    d.report(replica_stats("a", max_num_seqs=4, max_waiting=0, tokens_per_s=100))
    d.report(replica_stats("b", max_num_seqs=4, max_waiting=0, tokens_per_s=1))
    d.admit(req(0))
    (first,) = d.dispatch()
    assert first.replica_id == "a"
    d.complete("r0", Outcome.FAILED)
    retried = req(0)
    retried.avoid_replica = "a"
    d.admit(retried)
    (second,) = d.dispatch()
    assert second.replica_id == "b"


def test_a_retry_may_return_to_the_only_replica():
    d, _ = make()
    d.report(replica_stats("a", max_num_seqs=4, max_waiting=0))
    retried = req(0)
    retried.avoid_replica = "a"
    d.admit(retried)
    assert [x.replica_id for x in d.dispatch()] == ["a"]
