"""The QLM side of the global queue as plain objects (no Ray): the waiting-time estimator
against hand-computed cases, EDF and QLM orders, admission, placement, eviction, expiry
and recovery, all on an injected clock."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from orchestrator.config import QueueConfig, SLOClass
from orchestrator.dispatcher import Dispatcher
from orchestrator.errors import SLOUnattainableError
from orchestrator.estimator import ReplicaView, WaitEstimator, speed_from_profile
from orchestrator.journal import Finished
from orchestrator.outcomes import Outcome
from orchestrator.policies import make_queue_policy
from orchestrator.queued import QueuedRequest
from predictor_service.types import Prediction
from replicas.types import (
    ReplicaLimits,
    ReplicaStats,
    RequestHeader,
    SLOSpec,
    SpeedProfile,
)
from tests.unit.fakes import FakeClock

CLASSES = {
    "interactive": SLOClass(ttft_ms=2_000, e2e_ms=20_000, admission="reject", expire=True),
    "standard": SLOClass(ttft_ms=10_000, e2e_ms=120_000),
    "batch": SLOClass(e2e_ms=3_600_000),
    "instant": SLOClass(ttft_ms=1, admission="reject"),
    "instant-be": SLOClass(ttft_ms=1),
    "tight": SLOClass(ttft_ms=2_000),  # best effort, never expires
}
PROFILE = SpeedProfile(0.0, 10.0)  # a = 0 takes the prior 0.05: ~99.5 tokens/s per sequence


def stats(rid: str, *, model: str = "m", seqs: int = 2, waiting_room: int = 0,
          tps: float = 0.0, running: int = 0, num_waiting: int = 0, unstarted=(),
          active=(), gpu_class: str = "large", kv: float = 0.0) -> ReplicaStats:
    return ReplicaStats(replica_id=rid, deployment=f"d-{rid}", gpu_class=gpu_class, model=model,
                        limits=ReplicaLimits(seqs, waiting_room), num_running=running,
                        num_waiting=num_waiting, output_tokens_per_s=tps, kv_usage=kv,
                        active_request_ids=tuple(active), unstarted_request_ids=tuple(unstarted),
                        speed_profile=PROFILE)


def req(i: int, cls: str | None = "standard", *, tokens: float = 100.0, model: str = "m",
        arrival: float | None = None, prompt: int = 10) -> QueuedRequest:
    c = CLASSES.get(cls or "")
    header = RequestHeader(
        f"r{i}", model, slo=SLOSpec(class_name=cls, ttft_ms=c.ttft_ms, e2e_ms=c.e2e_ms) if c else None,
        prediction=Prediction(output_tokens=tokens, output_tokens_p50=tokens,
                              output_tokens_p90=tokens),
        arrival_s=arrival)
    return QueuedRequest(header, num_prompt_tokens=prompt, max_tokens=1000)


def make(policy: str = "edf", **cfg) -> tuple[Dispatcher, FakeClock]:
    clock = FakeClock()
    cfg.setdefault("default_slo_class", None)
    cfg.setdefault("replica_timeout_s", 1e6)
    return Dispatcher(QueueConfig(policy=policy, **cfg), clock, slo_classes=CLASSES), clock


# ---- estimator ----------------------------------------------------------------------
def test_speed_from_profile_and_measurement():
    s = speed_from_profile(SpeedProfile(1.0, 4.0), 4)
    assert s.profile_tokens_per_s == pytest.approx(1000 * 4 / 8)  # B / (c + a·B)
    assert s.single_seq_tokens_per_s == pytest.approx(200.0)
    assert s.tokens_per_s == pytest.approx(500.0)
    s.observe(300.0, num_running=2, saturated=False, alpha=0.5)
    assert s.tokens_per_s == 300.0  # measured while busy beats the profile
    s.observe(120.0, num_running=4, saturated=True, alpha=0.5)
    s.observe(80.0, num_running=4, saturated=True, alpha=0.5)
    assert s.tokens_per_s == pytest.approx(100.0)  # saturated EWMA wins: 120 → 100
    assert s.prefill_s(1000) == pytest.approx(1.004)


def test_wait_estimate_hand_computed_with_tail_margin():
    """Two queued requests ahead (100 ± σ tokens each), two full replicas at 50 tok/s:
    W = f0 + (200 + z·√(2σ²)) / 100."""
    d, _ = make("fifo", estimator_z=1.0)
    d.report(stats("a", seqs=1, tps=50.0, running=1))
    d.report(stats("b", seqs=1, tps=50.0, running=1))
    for i in range(2):  # occupy both replicas
        d.admit(req(i))
    d.dispatch()
    for r in d.replicas:  # both saturated at 50 tok/s
        r.speed.saturated_tokens_per_s = 50.0
        r.speed.mean_request_tokens = 100.0
    spread = Prediction(output_tokens=100, output_tokens_p50=100, output_tokens_p90=100 + 1.2816 * 30)
    for i in (2, 3):
        r = req(i)
        r.header = replace(r.header, prediction=spread)
        d.admit(r)
    d.run_pass(force=True)
    new = req(4)
    d.assess(new)
    f0 = 0.5 * 100 / 50  # half a mean request at 50 tok/s
    assert new.est_wait_s == pytest.approx(f0 + (200 + math.sqrt(2 * 30 ** 2)) / 100)


def test_wait_estimate_counts_admissions_and_removals_since_the_pass():
    d, _ = make("fifo", estimator_z=0.0)
    d.report(stats("a", seqs=1, tps=100.0, running=1))
    d.admit(req(0))
    d.dispatch()
    d.replicas["a"].speed.saturated_tokens_per_s = 100.0
    d.run_pass(force=True)
    d.admit(req(1, tokens=300))  # after the pass
    probe = req(2)
    d.assess(probe)
    f0 = d.replicas["a"].speed.slot_free_s()
    assert probe.est_wait_s == pytest.approx(f0 + 3.0)
    assert d.cancel("r1")
    probe2 = req(3)
    d.assess(probe2)
    assert probe2.est_wait_s == pytest.approx(f0)


def test_estimator_scores_itself_on_dispatch():
    est = WaitEstimator(min_wait_s=0.5)
    r = req(0)
    r.enqueued_s, r.est_wait_s = 100.0, 3.0
    est.on_dispatch("a", r, now_s=102.0)  # waited 2 s, estimated 3 s: 50 % off
    quick = req(1)
    quick.enqueued_s, quick.est_wait_s = 100.0, 0.0
    est.on_dispatch("a", quick, now_s=100.1)  # under min_wait_s: not scored
    assert est.error_stats()["estimator_error_median"] == pytest.approx(0.5)
    assert est.num_scored == 1


# ---- orders -------------------------------------------------------------------------
def test_edf_orders_by_deadline_across_groups_fifo_by_arrival():
    for policy, expect in (("edf", ["r1", "r0", "r2"]), ("fifo", ["r0", "r1", "r2"])):
        d, clock = make(policy)
        d.report(stats("a", seqs=1))
        d.admit(req(9))  # occupies the replica
        d.dispatch()
        d.admit(req(0, "standard"))  # deadline +10 s
        clock.advance(1)
        d.admit(req(1, "interactive"))  # deadline +2 s from now: earliest
        clock.advance(1)
        d.admit(req(2, "batch"))
        got = []
        for _ in range(3):
            d.complete(got[-1] if got else "r9")
            got += [a.request_id for a in d.dispatch()]
        assert got == expect, policy


def test_a_request_taken_and_pushed_back_is_queued_once():
    """The entry it was taken from is stale once it is pushed back: the order yields it
    once, and the next take returns it once (the heap's stale head is dropped)."""
    policy = make_queue_policy("edf")
    for i in range(3):
        r = req(i)
        r.deadline_s, r.seq = float(i), i
        policy.push(r, 0.0)
    first = policy.take([("m", "standard")])
    assert first is not None and first.request_id == "r0"
    policy.push_back([first], 0.0)
    assert [e[2].request_id for e in policy.ordered(0.0)] == ["r0", "r1", "r2"]
    taken = [policy.take([("m", "standard")]) for _ in range(4)]
    assert [t.request_id if t else None for t in taken] == ["r0", "r1", "r2", None]
    assert len(policy) == 0


def test_qlm_moves_late_requests_behind_those_that_can_still_make_it():
    d, clock = make("qlm")
    d.report(stats("a", seqs=1, tps=100.0, running=1))
    d.admit(req(9))
    d.dispatch()
    d.admit(req(0, "standard"))
    clock.advance(9.999)  # r0's TTFT deadline is now in 1 ms: it will miss anyway
    d.admit(req(1, "standard"))
    d.run_pass(force=True)
    d.complete("r9")
    assert [a.request_id for a in d.dispatch()] == ["r1"]
    e, clock2 = make("edf")
    e.report(stats("a", seqs=1, tps=100.0, running=1))
    e.admit(req(9))
    e.dispatch()
    e.admit(req(0, "standard"))
    clock2.advance(9.999)
    e.admit(req(1, "standard"))
    e.run_pass(force=True)
    e.complete("r9")
    assert [a.request_id for a in e.dispatch()] == ["r0"]  # EDF serves the hopeless one


def test_qlm_replans_groups_onto_replicas_when_a_miss_is_predicted():
    d, _ = make("qlm", placement="estimated-completion")
    d.report(stats("fast", seqs=1, tps=100.0, running=1))
    d.report(stats("slow", seqs=1, tps=5.0, running=1))
    d.admit(req(98))
    d.admit(req(99))
    d.dispatch()
    for i in range(16):
        d.admit(req(i, "tight" if i % 2 else "batch", tokens=50))
    done = d.run_pass(force=True)
    assert d.estimator.last_pass.num_predicted_misses > 0
    assert done["replanned"] == 1 and done["status"] in ("optimal", "time_limit")
    # the tight group goes to the fast replica's virtual queue
    assert done["assignment"]["m/tight"] == "fast"
    # a replica pulls its planned groups first; one with none takes the least urgent work
    d.complete("r98")
    d.complete("r99")
    got = {a.replica_id: d.lookup(a.request_id).slo_class for a in d.dispatch()}
    assert got == {"fast": "tight", "slow": "batch"}


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown queue policy"):
        make_queue_policy("lifo")


# ---- admission ----------------------------------------------------------------------
def test_impossible_slo_is_429_or_best_effort_per_class():
    d, _ = make()
    d.report(stats("a", seqs=4))
    with pytest.raises(SLOUnattainableError) as err:
        d.admit(req(0, "instant"))  # ttft 1 ms: one prefill step alone is 10 ms
    assert err.value.status_code == 429 and err.value.retry_after_s >= 1
    assert d.num_queued == 0 and d.outcomes[Outcome.REJECTED_SLO] == 1
    assert d.attainment["instant"] == [0, 1]
    r = req(1, "instant-be")
    d.admit(r)
    assert r.best_effort and d.counters["best_effort"] == 1 and d.num_queued == 1


def test_admission_rejects_when_the_queue_ahead_makes_the_ttft_unreachable():
    """One full replica at 10 tok/s, slots free every 0.5 s; interactive requests of 10
    tokens (1 s each) with a 2 s TTFT: under EDF the batch requests queued earlier are not
    ahead, so the first two interactive ones fit (0.51 s, 1.51 s) and the third (2.51 s)
    is refused; under FIFO the batch work ahead refuses the first one."""
    for policy, admitted in (("edf", 2), ("fifo", 0)):
        d, _ = make(policy, estimator_z=0.0)
        d.report(stats("a", seqs=1, tps=10.0, running=1))
        d.admit(req(99))
        d.dispatch()
        speed = d.replicas["a"].speed
        speed.saturated_tokens_per_s, speed.mean_request_tokens = 10.0, 10.0
        for i in range(3):
            d.admit(req(i, "batch", tokens=100))
        ok = 0
        with pytest.raises(SLOUnattainableError):
            for i in range(10, 20):
                d.admit(req(i, "interactive", tokens=10))
                ok += 1
        assert ok == admitted, policy


def test_requests_without_slo_get_the_default_class():
    clock = FakeClock()
    d = Dispatcher(QueueConfig(default_slo_class="standard"), clock, slo_classes=CLASSES)
    d.report(stats("a"))
    r = req(0, None)
    d.admit(r)
    assert r.slo_class == "standard" and r.deadline_s == pytest.approx(clock() + 10.0)


# ---- placement, pull ---------------------------------------------------------------
def test_estimated_completion_gives_the_fast_replica_more():
    d, _ = make("fifo", placement="estimated-completion")
    d.report(stats("fast", seqs=4, tps=400.0, running=1, gpu_class="large"))
    d.report(stats("slow", seqs=4, tps=40.0, running=1, gpu_class="small"))
    for i in range(6):
        d.admit(req(i))
    got = [a.gpu_class for a in d.dispatch()]
    assert got[:4] == ["large"] * 4 and got.count("small") == 2


def test_pull_stops_at_the_kv_threshold():
    d, _ = make("fifo", max_kv_usage=0.9)
    d.report(stats("a", seqs=4, kv=0.95))
    d.admit(req(0))
    assert d.dispatch() == []
    d.report(stats("a", seqs=4, kv=0.5))
    assert [a.request_id for a in d.dispatch()] == ["r0"]


# ---- eviction -----------------------------------------------------------------------
def test_evicts_an_unstarted_request_that_would_miss_where_another_replica_makes_it():
    d, clock = make(placement="least-loaded")
    d.report(stats("busy", seqs=1, waiting_room=1, tps=5.0, running=1))
    d.admit(req(0, "tight", tokens=10))
    d.admit(req(1, "tight", tokens=10))
    assert len(d.dispatch()) == 2  # both on "busy": one runs, one waits in its engine
    d.replicas["busy"].speed.saturated_tokens_per_s = 5.0
    d.replicas["busy"].speed.mean_request_tokens = 100.0  # 10 s per slot release
    d.report(stats("idle", seqs=4, tps=100.0))
    clock.advance(1.0)
    assert d.report(stats("busy", seqs=1, waiting_room=1, tps=5.0, running=1, num_waiting=1,
                          active=("r0", "r1"), unstarted=("r1",))) == []
    d.run_pass(force=True)
    assert d.counters["evictions"] == 1
    evict = d.report(stats("busy", seqs=1, waiting_room=1, tps=5.0, running=1, num_waiting=1,
                           active=("r0", "r1"), unstarted=("r1",)))
    assert evict == ["r1"]
    d.run_pass(force=True)  # never twice
    assert d.counters["evictions"] == 1
    # the ingress re-queues it (retry, avoiding "busy"): it lands on "idle"
    back = req(1, "tight", tokens=10)
    back.header = replace(back.header, arrival_s=1000.0)
    back.evicted, back.avoid_replica = True, "busy"
    d.release_for_retry("r1", Outcome.EVICTED)
    d.admit(back)
    assert [(a.request_id, a.replica_id) for a in d.dispatch()] == [("r1", "idle")]


def test_no_eviction_when_no_other_replica_can_make_it():
    d, clock = make()
    d.report(stats("busy", seqs=1, waiting_room=1, tps=5.0, running=1))
    d.admit(req(0, "tight", tokens=10))
    d.admit(req(1, "tight", tokens=10))
    d.dispatch()
    d.replicas["busy"].speed.mean_request_tokens = 100.0
    clock.advance(1.0)
    d.report(stats("busy", seqs=1, waiting_room=1, tps=5.0, running=1, num_waiting=1,
                   active=("r0", "r1"), unstarted=("r1",)))
    d.run_pass(force=True)
    assert d.counters["evictions"] == 0


# ---- expiry ---------------------------------------------------------------------------
def test_expiry_504_for_expiring_classes_only():
    d, clock = make(queue_timeout_s=600)
    d.report(stats("a", seqs=1))
    d.admit(req(9, "batch"))
    d.dispatch()
    d.admit(req(0, "interactive", tokens=1))
    d.admit(req(1, "standard", tokens=1))
    clock.advance(2.5)
    assert [(r.request_id, slo) for r, slo in d.expire()] == [("r0", True)]
    clock.advance(10)
    assert d.expire() == []  # standard does not expire: it is served late
    assert d.num_queued == 1 and d.attainment["interactive"] == [0, 1]


# ---- recovery ---------------------------------------------------------------------------
def test_recovered_requests_keep_their_order_and_wait_for_their_callers():
    d, clock = make("fifo")
    d.report(stats("a", seqs=1))
    originals = []
    for i in range(3):
        r = req(i)
        d.admit(r)
        originals.append(r)
    # a restarted manager reads them back (seq and enqueued time kept)
    d2, clock2 = make("fifo")
    clock2.now_s = clock.now_s
    d2.report(stats("a", seqs=1))
    for r in reversed(originals):
        d2.restore_queued(r, reattach_grace_s=30)
    assert d2.dispatch() == []  # nobody attached yet
    assert d2.attach("r2") is True and d2.attach("r1") is True
    assert [a.request_id for a in d2.dispatch()] == ["r1"]  # order kept; r0 unattached
    clock2.advance(31)
    d2.expire()
    assert d2.outcomes[Outcome.ABANDONED] == 1 and "r0" not in d2.policy
    d2.complete("r1")
    d2.report(stats("a", seqs=1))
    assert [a.request_id for a in d2.dispatch()] == ["r2"]


def test_recovered_dispatched_requests_hold_room_until_released():
    d, _ = make("fifo", lost_grace_s=5)
    d.restore_dispatched(req(0), "a")  # its replica has not reported yet
    d.report(stats("a", seqs=1, active=("r0",)))
    d.admit(req(1))
    assert d.dispatch() == []  # r0 still holds the only slot
    got = d.attach("r0")
    assert got.replica_id == "a" and got.deployment == "d-a"
    assert d.complete("r0")
    assert [a.request_id for a in d.dispatch()] == ["r1"]
    assert Finished("r0", Outcome.COMPLETED) in d.journal


def test_the_drain_rate_measured_from_a_backlog_calibrates_the_estimate():
    """Queued work measured leaving at 100 predicted tokens/s while the replicas report
    400 output tokens/s: κ = 0.25, and 200 tokens ahead mean 2 s, not 0.5 s."""
    est = WaitEstimator(z=0.0)
    view = ReplicaView("a", "m", speed_from_profile(PROFILE, 1), has_room=False, num_running=1)
    view.speed.saturated_tokens_per_s = 400.0
    view.speed.mean_request_tokens = 0.0  # no slot-release term: only the tokens ahead
    assert est.drain_scale("m", [view]) == 1.0  # not measured yet
    for i in range(11):  # from a backlog, one per second
        r = req(i, tokens=100)
        est.annotate(r)
        r.enqueued_s = i - 5.0
        est.on_dispatch("a", r, now_s=float(i), backlog_after=i < 10)
    idle = req(50, tokens=100)  # the backlog had emptied: the idle minute does not count
    est.annotate(idle)
    est.on_dispatch("a", idle, now_s=70.0, backlog_after=False)
    est.on_dispatch("a", idle, now_s=71.0, backlog_after=True)
    assert est.drain_scale("m", [view]) == pytest.approx(0.25)
    ahead = [req(20 + i, tokens=100) for i in range(2)]
    for r in ahead:
        est.annotate(r)
    est.run_pass([((r.request_id,), i, r, r.group) for i, r in enumerate(ahead)], [view],
                 now_s=20.0)
    probe = req(99, tokens=100)
    est.annotate(probe)
    assert est.admission_wait_s(probe, ("r99",), [view]) == pytest.approx(2.0)
