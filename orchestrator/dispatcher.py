"""The global queue's core, as the loop it is: requests come in (``admit``), replicas
report (``report``), work goes out to replicas with room (``dispatch``), requests end
(``complete``, ``cancel``, ``expire``), and a periodic pass re-plans and evicts
(``run_pass``).  Plain Python with the clock injected, so the queue manager actor, unit
tests and the simulator run this code.  One job per collaborator:

- the queue policy orders requests in groups (model, SLO class) (:mod:`.policies.order`);
- admission assesses a request against the waiting-time estimate and its SLO
  (:mod:`.admission`); expiry times and recovered requests waiting for their callers are
  in :mod:`.expiry`;
- the replica registry knows the replicas and their health (:mod:`.registry`); the
  in-flight ledger knows every dispatched request (:mod:`.ledger`), reconciled with the
  replicas' reports (:mod:`.reconcile`);
- **pull**: a replica is offered work only while it has room (fewer requests in flight
  than ``max_num_seqs + max_waiting_requests``; in its last report, engine-waiting count
  and KV usage under their thresholds); the replica with room that would finish a mean
  request first pulls next; **placement** among those with room is the placement
  policy's (a faster GPU class gets more), or, under QLM's plan, the puller's own
  (:mod:`.policies.qlm`);
- the periodic pass (:mod:`.periodic_pass`): estimates, QLM re-plan, **eviction** of
  unstarted requests that would miss their deadline where they are;
- **expiry**: a queued request whose deadline passed gets 504 if its class expires; any
  request queued longer than ``queue_timeout_s`` gets 503;
- counts and rates are the tally's (:mod:`.tally`);
- **durability**: dispatches and completions are journaled in :attr:`journal`; the queue
  service writes them to the store.  :meth:`restore_queued` and
  :meth:`restore_dispatched` rebuild the state a restarted queue manager reads back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from orchestrator.admission import Admission
from orchestrator.config import QueueConfig, SLOClass, default_slo_classes
from orchestrator.errors import DuplicateRequestError
from orchestrator.estimator import WaitEstimator
from orchestrator.expiry import ExpiryHeap, HeldRequests
from orchestrator.fleet import Assignment, ReplicaState
from orchestrator.journal import Dispatched, Finished, JournalEvent, Requeued
from orchestrator.ledger import InFlightLedger
from orchestrator.outcomes import Outcome
from orchestrator.periodic_pass import PeriodicPass
from orchestrator.policies import (
    PlacementPolicy,
    Planner,
    QueuePolicy,
    make_placement_policy,
    make_planner,
    make_queue_policy,
)
from orchestrator.queued import QueuedRequest
from orchestrator.reconcile import Reconciler
from orchestrator.registry import ReplicaRegistry
from orchestrator.tally import Tally
from replicas.types import ReplicaStats

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
        self.tally = Tally()
        #: Every dispatched, unfinished request and where it is (recovered ones included,
        #: also on replicas that have not reported since the restart).
        self.ledger = InFlightLedger()
        self.replicas = ReplicaRegistry(config, self.ledger, self.estimator)
        self._reconciler = Reconciler(self.ledger, config.lost_grace_s)
        self._admission = Admission(config, self.slo_classes, self.estimator, self._policy,
                                    self.tally)
        self._expiry = ExpiryHeap()
        self._held = HeldRequests()
        self._pass = PeriodicPass(config, self._policy, self.planner, self.estimator,
                                  self.replicas, self.ledger, self.tally)
        #: Drained by the queue service into the durable store.
        self.journal: list[JournalEvent] = []

    @property
    def outcomes(self) -> dict[Outcome, int]:
        return self.tally.outcomes

    @property
    def counters(self) -> dict[str, int]:
        return self.tally.counters

    @property
    def attainment(self) -> dict[str, list[int]]:
        return self.tally.attainment

    # ---- replicas ---------------------------------------------------------------------
    def report(self, stats: ReplicaStats) -> list[str]:
        """Take a replica's report; returns the ids it should abort (evicted).  Requests it
        has not been serving for ``lost_grace_s`` are released (:mod:`.reconcile`)."""
        now = self._clock()
        state = self.replicas.update(stats, now)
        for d in self._reconciler.lost(state, now):
            logger.warning("request %s: not active on replica %s for %.0fs; released",
                           d.request.request_id, state.replica_id, now - d.seen_s)
            self.complete(d.request.request_id, None)  # its outcome is the ingress's
        evict, state.pending_evictions = state.pending_evictions, []
        return evict

    def reap_replicas(self) -> list[str]:
        """Drop replicas silent for longer than ``replica_timeout_s``; returns their ids."""
        return self.replicas.reap(self._clock())

    # ---- admission --------------------------------------------------------------------
    def admit(self, request: QueuedRequest) -> None:
        """Assess and queue a request, or raise a typed rejection (then it is not queued)."""
        self.assess(request)
        self.insert(request)

    def assess(self, request: QueuedRequest) -> None:
        """Every admission check (:mod:`.admission`); fills the request's deadline and
        estimates.  Raises a typed rejection; on return :meth:`insert` may queue it."""
        self._refuse_duplicate(request.request_id)
        now = self._clock()
        self._admission.assess(request, self.replicas.healthy(now, request.model), now)

    def insert(self, request: QueuedRequest) -> None:
        """Put an assessed request in the queue."""
        self._refuse_duplicate(request.request_id)
        self._policy.push(request, self._clock())
        self._expiry.add(request, self._admission.expire_at_s(request),
                         self._policy.__contains__, len(self._policy))

    def _refuse_duplicate(self, request_id: str) -> None:
        if self._known(request_id):
            raise DuplicateRequestError(
                f"request id {request_id!r} is already in progress", param="X-Request-Id")

    # ---- dispatch ---------------------------------------------------------------------
    def dispatch(self) -> list[Assignment]:
        """Give queued requests to replicas that have room, in policy order."""
        now = self._clock()
        assignments: list[Assignment] = []
        if not len(self._policy):
            return assignments
        rooms: dict[str, list[ReplicaState]] = {}
        for r in self.replicas:
            if self.replicas.is_healthy(r, now) and r.has_room():
                rooms.setdefault(r.model, []).append(r)
        for model, with_room in rooms.items():
            skipped: list[QueuedRequest] = []
            # a dispatch changes only its target's pull order (its load and mean request)
            pull = {r.replica_id: _pull_order(r) for r in with_room}
            while with_room and len(skipped) < _MAX_SKIPPED:
                puller = min(with_room, key=lambda r: pull[r.replica_id])
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
                else:
                    pull[target.replica_id] = _pull_order(target)
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
                                     self.replicas.healthy(self._clock(), request.model)):
            out = [r for r in out if r.replica_id != avoid]
        return out

    # ---- the periodic pass: estimates, QLM re-plan, eviction ---------------------------
    def run_pass(self, force: bool = False) -> dict[str, Any]:
        """Every ``replan_period_s`` (or when the estimator's curve grew long): walk the
        queue, refresh the virtual queues, let the policy re-plan, choose evictions."""
        return self._pass.run(self._clock(), force)

    # ---- completion -------------------------------------------------------------------
    def complete(self, request_id: str, outcome: Outcome | None = Outcome.COMPLETED,
                 slo_met: bool | None = None) -> bool:
        """Release a dispatched request; False if it was not in flight.  ``outcome`` None
        releases the room without counting an outcome."""
        dispatch = self.ledger.pop(request_id)
        if dispatch is None:
            if outcome is not None and request_id not in self._policy:
                # its replica was removed, or it was released as lost: the store may still
                # hold it as dispatched
                self.journal.append(Finished(request_id, outcome))
            return False
        now = self._clock()
        if outcome is not None:
            self.tally.completed(outcome, now)
        if slo_met is not None:
            self.tally.slo(dispatch.request, slo_met)
        self._reconciler.released(request_id, now)
        self.journal.append(Finished(request_id, outcome or Outcome.FAILED))
        return True

    def release_for_retry(self, request_id: str, outcome: Outcome) -> None:
        """A dispatched request comes back to be queued again (its replica failed before
        the first token, or evicted it): free its room; its record stays."""
        if self.ledger.pop(request_id) is not None:
            self.tally.outcome(outcome)
            self.journal.append(Requeued(request_id))

    def cancel(self, request_id: str) -> bool:
        """Withdraw a request, queued or in flight; False if unknown."""
        request = self._policy.remove(request_id)
        if request is not None or self._held.pop(request_id) is not None:
            self.tally.outcome(Outcome.CANCELLED)
            self.journal.append(Finished(request_id, Outcome.CANCELLED))
            return True
        return self.complete(request_id, Outcome.CANCELLED)

    def expire(self) -> list[tuple[QueuedRequest, bool]]:
        """Remove queued requests past their expiry: (request, True when its SLO deadline
        passed — 504 — False when it waited longer than ``queue_timeout_s`` — 503).
        Recovered requests nobody re-attached to are dropped too (not returned), and
        recovered dispatches whose replica never reported are released."""
        now = self._clock()
        out: list[tuple[QueuedRequest, bool]] = []
        for seq, request_id in self._expiry.due(now):
            request = self._policy.get(request_id)
            if request is None or request.seq != seq:  # gone, or queued again since
                continue
            self._policy.remove(request_id)
            self.tally.outcome(Outcome.EXPIRED)
            self.tally.slo(request, met=False)
            self.journal.append(Finished(request_id, Outcome.EXPIRED))
            out.append((request, now - request.enqueued_s < self.config.queue_timeout_s))
        for request_id in self._held.overdue(now):
            self.tally.outcome(Outcome.ABANDONED)
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
                    self.ledger.pop(request_id)
                    self.journal.append(Finished(request_id, Outcome.FAILED))
        return out

    # ---- recovery ---------------------------------------------------------------------
    def restore_queued(self, request: QueuedRequest, reattach_grace_s: float) -> None:
        """A request recovered from the store, queued before the restart: held (outside
        the queue, its policy key unchanged so the order holds) until its caller
        re-attaches."""
        if self._known(request.request_id):
            return  # its caller re-attached before the store answered
        self._admission.continue_after(request.seq)
        self._held.hold(request, self._clock() + reattach_grace_s)
        self.tally.counters["recovered"] += 1

    def restore_dispatched(self, request: QueuedRequest, replica_id: str) -> None:
        """A request recovered as dispatched: it holds room on its replica (if the replica
        no longer serves it, reconciliation releases it after ``lost_grace_s``)."""
        if self._known(request.request_id):
            return
        self.ledger.add(request, replica_id, self._clock())
        self.tally.counters["recovered"] += 1

    def _known(self, request_id: str) -> bool:
        return (request_id in self.ledger or request_id in self._policy
                or request_id in self._held)

    def attach(self, request_id: str) -> Assignment | bool:
        """A caller re-attaches to a known request: its assignment if dispatched, True if
        queued (it will be dispatched), False if unknown."""
        if request_id in self._policy:
            return True
        held = self._held.pop(request_id)
        if held is not None:  # back in the queue under its original key: the order holds
            self.insert(held)
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
        return (self._policy.get(request_id) or self.ledger.request(request_id)
                or self._held.get(request_id))

    # ---- rates ------------------------------------------------------------------------
    def retry_after_s(self) -> float:
        """How long a rejected client should wait: the queue drained at the recent rate."""
        return self._admission.retry_after_s(self._clock())

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
