"""The global queue's core: admission, pull-based dispatch, eviction, expiry, completion.
Plain Python with the clock injected, so the queue manager actor, unit tests and a
simulator run this code.

- **Pull**: a replica is offered work only while it has room (fewer requests in flight
  than ``max_num_seqs + max_waiting_requests``; in its last report, engine-waiting count
  and KV usage under their thresholds).  Everything else waits in one global queue, in
  request groups (model, SLO class), ordered by the configured policy.
- **Admission**: the waiting-time estimator (:mod:`orchestrator.estimator`) predicts the
  request's first token and end; if that misses its SLO, its class decides: 429 with
  ``Retry-After`` (``reject``) or admit best effort.
- **Placement** among the replicas with room: the placement policy (by estimated
  completion: a faster GPU class gets more); QLM's plan may name a replica per group.
- **Eviction**: a request that a replica has not started and that would miss its deadline
  there while another replica with room can make it is handed back (the replica aborts it;
  the ingress re-queues it with its original deadline, avoiding that replica).
- **Expiry**: a queued request whose deadline passed gets 504 if its class expires;
  any request queued longer than ``queue_timeout_s`` gets 503.
- **Durability**: the dispatcher journals dispatches and completions in :attr:`journal`;
  the queue service writes them to the store.  :meth:`restore_queued` and
  :meth:`restore_dispatched` rebuild the state a restarted queue manager reads back.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from orchestrator.config import QueueConfig, SLOClass, default_slo_classes
from orchestrator.errors import (
    DuplicateRequestError,
    NoHealthyReplicaError,
    OverloadedError,
    SLOUnattainableError,
)
from orchestrator.estimator import WaitEstimator
from orchestrator.eviction import choose_evictions
from orchestrator.fleet import Assignment, ReplicaState
from orchestrator.journal import Dispatched, Finished, JournalEvent, Requeued
from orchestrator.ledger import InFlightLedger
from orchestrator.outcomes import Outcome
from orchestrator.placement import PlacementPolicy, make_placement_policy
from orchestrator.qlm import Planner, make_planner
from orchestrator.queue_policy import QueuePolicy, make_queue_policy
from orchestrator.queued import QueuedRequest
from orchestrator.registry import ReplicaRegistry
from replicas.types import ReplicaStats, SLOSpec

logger = logging.getLogger(__name__)

__all__ = ["Assignment", "Dispatcher", "ReplicaState"]

_MAX_SKIPPED = 64


class Dispatcher:
    def __init__(self, config: QueueConfig, clock: Callable[[], float],
                 policy: QueuePolicy | None = None, placement: PlacementPolicy | None = None,
                 slo_classes: dict[str, SLOClass] | None = None) -> None:
        self.config = config
        self._clock = clock
        self.slo_classes = slo_classes if slo_classes is not None else default_slo_classes()
        self._policy = policy or make_queue_policy(config.policy)
        self.planner: Planner = make_planner(self._policy.name, config.plan_time_limit_s)
        self._placement = placement or make_placement_policy(config.placement)
        self.estimator = WaitEstimator(z=config.estimator_z)
        self._policy.watch(self.estimator)  # its curve follows every queue change
        #: Every dispatched, unfinished request and where it is (recovered ones included,
        #: also on replicas that have not reported since the restart).
        self.ledger = InFlightLedger()
        self.replicas = ReplicaRegistry(config, self.ledger, self.estimator)
        #: Recovered queued requests waiting for their callers: id -> (request, give up at).
        #: Outside the policy until attached, so they never block the queue's head.
        self._held: dict[str, tuple[QueuedRequest, float]] = {}
        self._expiry: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._completions: deque[float] = deque()  # completion times, for Retry-After
        self._recent_done: deque[tuple[float, str]] = deque()  # (time, id) of releases
        self._recent_done_ids: set[str] = set()
        self._last_pass_s = -math.inf
        self.outcomes: dict[Outcome, int] = {o: 0 for o in Outcome}
        self.counters: dict[str, int] = {"best_effort": 0, "evictions": 0, "recovered": 0,
                                         "replans": 0}
        #: SLO class -> [met, finished or rejected]
        self.attainment: dict[str, list[int]] = {}
        #: Drained by the queue service into the durable store.
        self.journal: list[JournalEvent] = []

    # ---- replicas ---------------------------------------------------------------------
    def report(self, stats: ReplicaStats) -> list[str]:
        """Take a replica's report; returns the ids it should abort (evicted)."""
        now = self._clock()
        state = self.replicas.update(stats, now)
        self._reconcile(state, now)
        evict, state.pending_evictions = state.pending_evictions, []
        return evict

    def _reconcile(self, state: ReplicaState, now: float) -> None:
        """Release requests the replica has not been serving for ``lost_grace_s`` (a lost
        completion notice, or a client that left before its stream started).  The grace
        counts from the last report that listed the request, so that a request which just
        ended on the replica is released by its caller, with its outcome, not as lost."""
        active = set(state.stats.active_request_ids)
        while self._recent_done and now - self._recent_done[0][0] > self.config.lost_grace_s:
            self._recent_done_ids.discard(self._recent_done.popleft()[1])
        state.num_unknown_active = len(active - state.in_flight.keys() - self._recent_done_ids)
        self.ledger.seen(state.replica_id, active, now)
        lost = []
        for rid in state.in_flight:
            d = self.ledger.get(rid)
            if (d is not None and rid not in active and now - d.seen_s > self.config.lost_grace_s
                    and not self._evicting(rid, now - d.since_s)):
                lost.append(d)
        for d in lost:
            logger.warning("request %s: not active on replica %s for %.0fs; released",
                           d.request.request_id, state.replica_id, now - d.seen_s)
            self.complete(d.request.request_id, None)  # its outcome is the ingress's

    def _evicting(self, request_id: str, age_s: float) -> bool:
        """An evicted request waits for its caller's retry (not "lost"), for a while."""
        request = self.ledger.request(request_id)
        return (request is not None and request.evicted
                and age_s < 3 * self.config.lost_grace_s)

    def remove_replica(self, replica_id: str) -> list[str]:
        """Forget a replica; returns the ids of requests that were in flight on it."""
        return self.replicas.remove(replica_id)

    def is_healthy(self, state: ReplicaState, now_s: float) -> bool:
        return self.replicas.is_healthy(state, now_s)

    def healthy_replicas(self, model: str | None = None) -> list[ReplicaState]:
        return self.replicas.healthy(self._clock(), model)

    def reap_replicas(self) -> list[str]:
        """Drop replicas silent for longer than ``replica_timeout_s``; returns their ids."""
        return self.replicas.reap(self._clock())

    # ---- admission --------------------------------------------------------------------
    def admit(self, request: QueuedRequest) -> None:
        """Assess and queue a request, or raise a typed rejection (then it is not queued)."""
        self.assess(request)
        self.enqueue(request)

    def assess(self, request: QueuedRequest) -> None:
        """Every admission check; fills the request's deadline and estimates.  Raises a
        typed rejection; on return the request may be queued by :meth:`enqueue`."""
        if self._known(request.request_id):
            raise DuplicateRequestError(
                f"request id {request.request_id!r} is already in progress", param="X-Request-Id")
        now = self._clock()
        arrival_s = request.arrival_s
        if arrival_s is None:
            arrival_s = now
            request.header = replace(request.header, arrival_s=now)
        if request.slo is None and self.config.default_slo_class is not None:
            c = self.slo_classes[self.config.default_slo_class]
            request.header = replace(request.header, slo=SLOSpec(
                class_name=self.config.default_slo_class, ttft_ms=c.ttft_ms, e2e_ms=c.e2e_ms))
        replicas = self.healthy_replicas(request.model)
        if not replicas:
            self.outcomes[Outcome.REJECTED_NO_REPLICA] += 1
            raise NoHealthyReplicaError(
                f"no healthy replica serves model {request.model!r}; retry later",
                retry_after_s=self.config.retry_after_min_s)
        if len(self._policy) >= self.config.max_queued:
            self.outcomes[Outcome.REJECTED_OVERLOAD] += 1
            raise OverloadedError(
                f"the queue is full ({self.config.max_queued} requests waiting); retry later",
                retry_after_s=self.retry_after_s())
        self.estimator.annotate(request)
        views = [r.view() for r in replicas]
        best_ttft, best_end = min(self.estimator.service_s(request, v) for v in views)
        slo = request.slo
        if slo is not None and slo.ttft_ms is not None:
            request.deadline_s = arrival_s + slo.ttft_ms / 1000.0
        elif slo is not None and slo.e2e_ms is not None:
            request.deadline_s = arrival_s + slo.e2e_ms / 1000.0 - (best_end - best_ttft)
        request.seq = next(self._seq) + 1
        request.enqueued_s = now
        wait = self.estimator.admission_wait_s(request, self._policy.key(request), views)
        request.est_wait_s = float(wait)
        if slo is None or request.evicted:
            return
        misses = ((slo.ttft_ms is not None
                   and now + wait + best_ttft > arrival_s + slo.ttft_ms / 1000.0)
                  or (slo.e2e_ms is not None
                      and now + wait + best_end > arrival_s + slo.e2e_ms / 1000.0))
        if not misses:
            return
        cls = self.slo_classes.get(slo.class_name or "")
        rule = cls.admission if cls is not None else self.config.explicit_slo_admission
        if rule == "reject":
            self.outcomes[Outcome.REJECTED_SLO] += 1
            self.record_slo(request, met=False)
            target = (f"ttft_ms {slo.ttft_ms}" if slo.ttft_ms is not None else f"e2e_ms {slo.e2e_ms}")
            raise SLOUnattainableError(
                f"slo: no replica is estimated to meet this request's SLO (class "
                f"{request.slo_class!r}, {target}); estimated queue wait {wait:.1f}s",
                param="slo", retry_after_s=min(self.config.retry_after_max_s,
                                               max(self.config.retry_after_min_s, wait)))
        request.best_effort = True
        self.counters["best_effort"] += 1

    def _known(self, request_id: str) -> bool:
        return (request_id in self.ledger or request_id in self._policy
                or request_id in self._held)

    def enqueue(self, request: QueuedRequest) -> None:
        """Put an assessed request in the queue."""
        if self._known(request.request_id):
            raise DuplicateRequestError(
                f"request id {request.request_id!r} is already in progress", param="X-Request-Id")
        self._policy.push(request, self._clock())
        expire_at = request.enqueued_s + self.config.queue_timeout_s
        cls = self.slo_classes.get(request.slo.class_name or "") if request.slo else None
        if cls is not None and cls.expire:
            expire_at = min(expire_at, request.deadline_s)
        heapq.heappush(self._expiry, (expire_at, request.seq, request.request_id))
        if len(self._expiry) > 4 * len(self._policy) + 1024:  # drop entries of dispatched ones
            self._expiry = [e for e in self._expiry if e[2] in self._policy]
            heapq.heapify(self._expiry)

    # ---- dispatch ---------------------------------------------------------------------
    def dispatch(self) -> list[Assignment]:
        """Give queued requests to replicas that have room, in policy order."""
        now = self._clock()
        assignments: list[Assignment] = []
        if not len(self._policy):
            return assignments
        rooms: dict[str, list[ReplicaState]] = {}
        for r in self.replicas:
            if self.is_healthy(r, now) and r.has_room():
                rooms.setdefault(r.model, []).append(r)
        for model, with_room in rooms.items():
            skipped: list[QueuedRequest] = []
            while with_room and len(skipped) < _MAX_SKIPPED:
                puller = min(with_room, key=_pull_order)
                mine, others = self.planner.split(self._policy.groups(model), puller.replica_id)
                request = self._policy.take(mine) or (
                    self._policy.take(others, latest=True) if others else None)
                if request is None:
                    break
                candidates = self._candidates(request, with_room)
                if not candidates:
                    skipped.append(request)
                    continue
                target = self._target(request, candidates, puller, now)
                assignments.append(self._assign(request, target, now))
                if not target.has_room():
                    with_room.remove(target)
            self._policy.push_back(skipped, now)
        return assignments

    def _target(self, request: QueuedRequest, candidates: list[ReplicaState],
                puller: ReplicaState, now: float) -> ReplicaState:
        """Under a plan the replica that pulled the request runs it (its virtual queue);
        otherwise the placement policy chooses among those with room."""
        if self.planner.active and puller in candidates:
            return puller
        return self._placement.choose(request, candidates, now)

    def _assign(self, request: QueuedRequest, target: ReplicaState, now: float) -> Assignment:
        self.ledger.add(request, target.replica_id, now)
        self.estimator.on_dispatch(target.replica_id, request, now,
                                   backlog_after=self._policy.has_queued(request.model))
        self.journal.append(Dispatched(request.request_id, target.replica_id,
                                       target.stats.deployment, target.stats.gpu_class))
        return Assignment(request.request_id, target.replica_id, target.stats.deployment,
                          target.stats.gpu_class, now - request.enqueued_s)

    def _candidates(self, request: QueuedRequest,
                    with_room: list[ReplicaState]) -> list[ReplicaState]:
        """Replicas with room for this request.  A retried request avoids the replica that
        failed (or evicted) it while another healthy replica serves its model."""
        out = list(with_room)
        avoid = request.avoid_replica
        if avoid is not None and any(r.replica_id != avoid for r in
                                     self.healthy_replicas(request.model)):
            out = [r for r in out if r.replica_id != avoid]
        return out

    # ---- the periodic pass: estimates, QLM re-plan, eviction ---------------------------
    def run_pass(self, force: bool = False) -> dict[str, Any]:
        """Every ``replan_period_s`` (or when the estimator's curve grew long): walk the
        queue, refresh the virtual queues, let the policy re-plan, choose evictions."""
        now = self._clock()
        if not force and now - self._last_pass_s < self.config.replan_period_s \
                and not self.estimator.needs_pass():
            return {}
        self._last_pass_s = now
        views = [r.view() for r in self.replicas.healthy(now)]
        if self._policy.uses_late and self.estimator.mark_late(self._policy.live(), views, now):
            self._policy.rekey(now)  # the pass must see the order that dispatch will use
        result = self.estimator.run_pass(self._policy.ordered(now), self._policy.key, views, now)
        try:
            done = self.planner.replan(result, now)
        except Exception:
            logger.exception("queue policy re-plan failed; plan cleared")
            self.planner.clear()
            done = {}
        if done.get("replanned"):
            self.counters["replans"] += 1
        if self.config.eviction.enabled:
            self._evict(now)
        return done

    def _evict(self, now: float) -> None:
        healthy = self.replicas.healthy(now)
        queued_heads = {m for (m, _c) in self._policy.group_sizes()}
        for replica_id, request_id in choose_evictions(
                healthy, self.ledger, queued_heads, now, self.config.eviction.overhead_s):
            state = self.replicas[replica_id]
            request = self.ledger.request(request_id)
            if request is None or request.evicted:
                continue
            request.evicted = True
            state.pending_evictions.append(request_id)
            self.counters["evictions"] += 1
            logger.info("evicting %s from %s (deadline in %.1fs)", request_id, replica_id,
                        request.deadline_s - now)

    # ---- completion -------------------------------------------------------------------
    def complete(self, request_id: str, outcome: Outcome | None = Outcome.COMPLETED,
                 slo_met: bool | None = None) -> bool:
        """Release a dispatched request; False if it was not in flight.  ``outcome`` None
        releases the room without counting an outcome."""
        released = self._unassign(request_id)
        if released is None:
            if outcome is not None and request_id not in self._policy:
                # its replica was removed, or it was released as lost: the store may still
                # hold it as dispatched
                self.journal.append(Finished(request_id, outcome))
            return False
        now = self._clock()
        if outcome is not None:
            self.outcomes[outcome] += 1
            self._completions.append(now)
            if len(self._completions) > 4096:
                self._completions.popleft()
        if slo_met is not None:
            self.record_slo(released, slo_met)
        self._recent_done.append((now, request_id))
        self._recent_done_ids.add(request_id)
        self.journal.append(Finished(request_id, outcome or Outcome.FAILED))
        return True

    def release_for_retry(self, request_id: str, outcome: Outcome) -> None:
        """A dispatched request comes back to be queued again (its replica failed before
        the first token, or evicted it): free its room; its record stays."""
        if self._unassign(request_id) is not None:
            self.outcomes[outcome] += 1
            self.journal.append(Requeued(request_id))

    def _unassign(self, request_id: str) -> QueuedRequest | None:
        """Forget a dispatch (its room is free); None if it was not dispatched.  Every
        release path goes through here."""
        dispatch = self.ledger.pop(request_id)
        return dispatch.request if dispatch is not None else None

    def record_slo(self, request: QueuedRequest, met: bool) -> None:
        if request.slo is None:
            return
        entry = self.attainment.setdefault(request.slo_class, [0, 0])
        entry[0] += int(met)
        entry[1] += 1

    def cancel(self, request_id: str) -> bool:
        """Withdraw a request, queued or in flight; False if unknown."""
        request = self._policy.remove(request_id)
        if request is not None or self._held.pop(request_id, None) is not None:
            self.outcomes[Outcome.CANCELLED] += 1
            self.journal.append(Finished(request_id, Outcome.CANCELLED))
            return True
        return self.complete(request_id, Outcome.CANCELLED)

    def expire(self) -> list[tuple[QueuedRequest, bool]]:
        """Remove queued requests past their expiry: (request, True when its SLO deadline
        passed — 504 — False when it waited longer than ``queue_timeout_s`` — 503).
        Recovered requests nobody re-attached to are dropped too (not returned)."""
        now = self._clock()
        out: list[tuple[QueuedRequest, bool]] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, seq, request_id = heapq.heappop(self._expiry)
            request = self._policy.get(request_id)
            if request is None or request.seq != seq:  # gone, or queued again since
                continue
            self._policy.remove(request_id)
            self.outcomes[Outcome.EXPIRED] += 1
            self.record_slo(request, met=False)
            self.journal.append(Finished(request_id, Outcome.EXPIRED))
            out.append((request, now - request.enqueued_s < self.config.queue_timeout_s))
        for request_id, (request, give_up_s) in list(self._held.items()):
            if now >= give_up_s:
                del self._held[request_id]
                self.outcomes[Outcome.ABANDONED] += 1
                self.journal.append(Finished(request_id, Outcome.ABANDONED))
                logger.warning("recovered request %s: no caller re-attached; dropped", request_id)
        orphan_limit_s = self.config.lost_grace_s + self.config.replica_timeout_s
        for replica_id in self.ledger.replicas():
            if replica_id in self.replicas:
                continue  # reported: reconciliation handles its requests
            for request_id, since in list(self.ledger.on(replica_id).items()):
                if now - since > orphan_limit_s:  # its replica never came back
                    logger.warning("recovered request %s: replica %s never reported; released",
                                   request_id, replica_id)
                    self._unassign(request_id)
                    self.journal.append(Finished(request_id, Outcome.FAILED))
        return out

    # ---- recovery ---------------------------------------------------------------------
    def restore_queued(self, request: QueuedRequest, reattach_grace_s: float) -> None:
        """A request recovered from the store, queued before the restart: back in the queue
        (its policy key is unchanged, so the order holds), waiting for its caller."""
        if self._known(request.request_id):
            return  # its caller re-attached before the store answered
        self._seq = itertools.count(max(next(self._seq), request.seq) + 1)
        self._held[request.request_id] = (request, self._clock() + reattach_grace_s)
        self.counters["recovered"] += 1

    def restore_dispatched(self, request: QueuedRequest, replica_id: str) -> None:
        """A request recovered as dispatched: it holds room on its replica (if the replica
        no longer serves it, reconciliation releases it after ``lost_grace_s``)."""
        now = self._clock()
        if self._known(request.request_id):
            return
        self.ledger.add(request, replica_id, now)
        self.counters["recovered"] += 1

    def attach(self, request_id: str) -> Assignment | bool:
        """A caller re-attaches to a known request: its assignment if dispatched, True if
        queued (it will be dispatched), False if unknown."""
        if request_id in self._policy:
            return True
        held = self._held.pop(request_id, None)
        if held is not None:  # back in the queue under its original key: the order holds
            self.enqueue(held[0])
            return True
        dispatch = self.ledger.get(request_id)
        if dispatch is None:
            return False
        replica_id, request = dispatch.replica_id, dispatch.request
        state = self.replicas.get(replica_id)
        return Assignment(request_id, replica_id,
                          state.stats.deployment if state else request.recovered_deployment,
                          state.stats.gpu_class if state else request.recovered_gpu_class,
                          0.0)

    def lookup(self, request_id: str) -> QueuedRequest | None:
        held = self._held.get(request_id)
        return self._policy.get(request_id) or self.ledger.request(request_id) or (
            held[0] if held else None)

    # ---- rates ------------------------------------------------------------------------
    def completion_rate_per_s(self, window_s: float = 30.0) -> float:
        """Completions per second over the last ``window_s`` seconds."""
        now = self._clock()
        while self._completions and now - self._completions[0] > window_s:
            self._completions.popleft()
        if len(self._completions) < 2:
            return 0.0
        span = max(now - self._completions[0], 1.0)
        return len(self._completions) / span

    def retry_after_s(self) -> float:
        """How long a rejected client should wait: the queue drained at the recent rate."""
        rate = self.completion_rate_per_s()
        if rate <= 0:
            return self.config.retry_after_min_s
        return min(self.config.retry_after_max_s,
                   max(self.config.retry_after_min_s, len(self._policy) / rate))

    # ---- introspection ----------------------------------------------------------------
    @property
    def num_queued(self) -> int:
        return len(self._policy) + len(self._held)

    @property
    def num_in_flight(self) -> int:
        return len(self.ledger)

    @property
    def policy(self) -> QueuePolicy:
        return self._policy

    @property
    def placement_name(self) -> str:
        return self._placement.name

    def now_s(self) -> float:
        """The dispatcher's clock (injected: wall time in serving, simulated time in the
        simulator)."""
        return self._clock()

    def snapshot(self) -> dict[str, Any]:
        from orchestrator.snapshot import snapshot
        return snapshot(self)


def _pull_order(r: ReplicaState) -> tuple[float, str]:
    """Which replica with room pulls next: the one where a mean request would finish
    first (its measured speed next to what it runs), so a faster class pulls more."""
    return (r.speed.finish_s(0, r.speed.mean_request_tokens, r.num_busy_seqs), r.replica_id)
