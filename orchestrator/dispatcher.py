"""The global queue's core: admission, pull-based dispatch, completion.  Plain Python with
the clock injected, so the queue manager actor, unit tests and a simulator run this code.

Pull-based dispatch: a replica is offered the head of the queue only while it has room,
i.e. fewer requests in flight than ``max_num_seqs + max_waiting_requests`` and, in its
last report, no more engine-waiting requests than ``max_waiting_requests``.  Everything
else waits in one global queue, ordered by the configured policy, so the global order
still decides who runs next when room appears.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.config import QueueConfig
from orchestrator.errors import NoHealthyReplicaError, OverloadedError
from orchestrator.outcomes import Outcome
from orchestrator.placement import PlacementPolicy, make_placement_policy
from orchestrator.queue_policy import QueuedRequest, QueuePolicy, make_queue_policy
from replicas.types import ReplicaStats

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplicaState:
    stats: ReplicaStats
    last_seen_s: float
    #: request id -> when it was assigned here
    in_flight: dict[str, float] = field(default_factory=dict)
    #: requests the replica reports serving that this manager did not assign (e.g. it
    #: restarted and forgot them): they hold room too
    num_unknown_active: int = 0

    @property
    def replica_id(self) -> str:
        return self.stats.replica_id

    @property
    def num_holding(self) -> int:
        """Requests that hold engine room: in flight here plus those the replica serves
        that this manager does not know, less those paused on an API call (no engine
        slot while their tool runs)."""
        return max(0, len(self.in_flight) + self.num_unknown_active - self.stats.num_paused)

    @property
    def load_fraction(self) -> float:
        return self.num_holding / max(1, self.stats.limits.max_in_flight)

    def has_room(self) -> bool:
        return (self.num_holding < self.stats.limits.max_in_flight
                and self.stats.num_waiting <= self.stats.limits.max_waiting_requests)


@dataclass(frozen=True, slots=True)
class Assignment:
    """The queue manager's answer to the ingress: where to run the request."""

    request_id: str
    replica_id: str
    deployment: str
    gpu_class: str
    queued_s: float


class Dispatcher:
    def __init__(self, config: QueueConfig, clock: Callable[[], float],
                 policy: QueuePolicy | None = None,
                 placement: PlacementPolicy | None = None) -> None:
        self.config = config
        self._clock = clock
        self._policy = policy or make_queue_policy(config.policy)
        self._placement = placement or make_placement_policy(config.placement)
        self._replicas: dict[str, ReplicaState] = {}
        self._assigned: dict[str, str] = {}  # request id -> replica id
        self._seq = itertools.count()
        self._completions: deque[float] = deque()  # completion times, for Retry-After
        self._recent_done: deque[tuple[float, str]] = deque()  # (time, id) of releases
        self._recent_done_ids: set[str] = set()
        self.outcomes: dict[Outcome, int] = {o: 0 for o in Outcome}

    # ---- replicas ---------------------------------------------------------------------
    def report(self, stats: ReplicaStats) -> None:
        now = self._clock()
        state = self._replicas.get(stats.replica_id)
        if state is None:
            logger.info("replica %s (%s, class %s) joined", stats.replica_id,
                        stats.deployment, stats.gpu_class)
            self._replicas[stats.replica_id] = state = ReplicaState(stats=stats, last_seen_s=now)
            self._reconcile(state, now)
        else:
            state.stats = stats
            state.last_seen_s = now
            self._reconcile(state, now)

    def _reconcile(self, state: ReplicaState, now: float) -> None:
        """Release requests the replica has not been serving for ``lost_grace_s`` (a lost
        completion notice, or a client that left before its stream started)."""
        active = set(state.stats.active_request_ids)
        while self._recent_done and now - self._recent_done[0][0] > self.config.lost_grace_s:
            self._recent_done_ids.discard(self._recent_done.popleft()[1])
        state.num_unknown_active = len(active - state.in_flight.keys() - self._recent_done_ids)
        lost = [rid for rid, t in state.in_flight.items()
                if rid not in active and now - t > self.config.lost_grace_s]
        for rid in lost:
            logger.warning("request %s: not active on replica %s for %.0fs; released",
                           rid, state.replica_id, now - state.in_flight[rid])
            self.complete(rid, None)  # its outcome is the ingress's to report

    def remove_replica(self, replica_id: str) -> list[str]:
        """Forget a replica; returns the ids of requests that were in flight on it."""
        state = self._replicas.pop(replica_id, None)
        if state is None:
            return []
        for request_id in state.in_flight:
            self._assigned.pop(request_id, None)
        return sorted(state.in_flight)

    def is_healthy(self, state: ReplicaState, now_s: float) -> bool:
        return (state.stats.engine_alive
                and now_s - state.last_seen_s <= self.config.replica_timeout_s)

    def healthy_replicas(self, model: str | None = None) -> list[ReplicaState]:
        now = self._clock()
        return [r for r in self._replicas.values()
                if self.is_healthy(r, now) and (model is None or r.stats.model == model)]

    def reap_replicas(self) -> list[str]:
        """Drop replicas silent for longer than ``replica_timeout_s``; returns their ids."""
        now = self._clock()
        silent = [rid for rid, r in self._replicas.items()
                  if now - r.last_seen_s > self.config.replica_timeout_s]
        for rid in silent:
            logger.warning("replica %s silent for %.1fs: removed", rid,
                           now - self._replicas[rid].last_seen_s)
            self.remove_replica(rid)
        return silent

    # ---- requests ---------------------------------------------------------------------
    def admit(self, request: QueuedRequest) -> None:
        """Queue a request or raise a typed rejection (the request is then not queued)."""
        if request.request_id in self._assigned or request.request_id in self._policy:
            raise ValueError(f"duplicate request id {request.request_id!r}")
        if not self.healthy_replicas(request.model):
            self.outcomes[Outcome.REJECTED_NO_REPLICA] += 1
            raise NoHealthyReplicaError(
                f"no healthy replica serves model {request.model!r}; retry later",
                retry_after_s=self.config.retry_after_min_s)
        if len(self._policy) >= self.config.max_queued:
            self.outcomes[Outcome.REJECTED_OVERLOAD] += 1
            raise OverloadedError(
                f"the queue is full ({self.config.max_queued} requests waiting); retry later",
                retry_after_s=self.retry_after_s())
        now = self._clock()
        request.enqueued_s = now
        request.seq = next(self._seq)
        self._policy.push(request, now)

    def dispatch(self) -> list[Assignment]:
        """Give queued requests to replicas that have room, in policy order."""
        now = self._clock()
        assignments: list[Assignment] = []
        if not len(self._policy):
            return assignments
        with_room = [r for r in self._replicas.values() if self.is_healthy(r, now) and r.has_room()]
        if not with_room:
            return assignments
        for request in list(self._policy.ordered(now)):
            candidates = self._candidates(request, with_room, now)
            if not candidates:
                if not any(r.has_room() for r in with_room):
                    break
                continue
            target = self._placement.choose(request, candidates, now)
            self._policy.remove(request.request_id)
            target.in_flight[request.request_id] = now
            self._assigned[request.request_id] = target.replica_id
            assignments.append(Assignment(request.request_id, target.replica_id,
                                          target.stats.deployment, target.stats.gpu_class,
                                          now - request.enqueued_s))
        return assignments

    def _candidates(self, request: QueuedRequest, with_room: list[ReplicaState],
                    now: float) -> list[ReplicaState]:
        """Replicas with room for this request.  A retried request avoids the replica that
        failed it while another healthy replica serves its model."""
        out = [r for r in with_room if r.stats.model == request.model and r.has_room()]
        avoid = request.extra.get("avoid_replica")
        if avoid is not None and any(r.replica_id != avoid for r in
                                     self.healthy_replicas(request.model)):
            out = [r for r in out if r.replica_id != avoid]
        return out

    def complete(self, request_id: str, outcome: Outcome | None = Outcome.COMPLETED) -> bool:
        """Release a dispatched request; False if it was not in flight.  ``outcome`` None
        releases the room without counting an outcome."""
        replica_id = self._assigned.pop(request_id, None)
        if replica_id is None:
            return False
        state = self._replicas.get(replica_id)
        if state is not None:
            state.in_flight.pop(request_id, None)
        now = self._clock()
        if outcome is not None:
            self.outcomes[outcome] += 1
            self._completions.append(now)
        self._recent_done.append((now, request_id))
        self._recent_done_ids.add(request_id)
        return True

    def cancel(self, request_id: str) -> bool:
        """Withdraw a request, queued or in flight; False if unknown."""
        if self._policy.remove(request_id) is not None:
            self.outcomes[Outcome.CANCELLED] += 1
            return True
        return self.complete(request_id, Outcome.CANCELLED)

    def expire(self) -> list[QueuedRequest]:
        """Remove requests queued longer than ``queue_timeout_s``."""
        now = self._clock()
        expired = [r for r in self._policy.ordered(now)
                   if now - r.enqueued_s > self.config.queue_timeout_s]
        for request in expired:
            self._policy.remove(request.request_id)
            self.outcomes[Outcome.EXPIRED] += 1
        return expired

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
        return len(self._policy)

    @property
    def num_in_flight(self) -> int:
        return len(self._assigned)

    def snapshot(self) -> dict[str, object]:
        now = self._clock()
        return {
            "policy": self._policy.name,
            "num_queued": self.num_queued,
            "num_in_flight": self.num_in_flight,
            "outcomes": {o.value: n for o, n in self.outcomes.items()},
            "replicas": [
                {"replica_id": r.replica_id, "deployment": r.stats.deployment,
                 "gpu_class": r.stats.gpu_class, "model": r.stats.model,
                 "healthy": self.is_healthy(r, now), "in_flight": len(r.in_flight),
                 "max_in_flight": r.stats.limits.max_in_flight,
                 "num_running": r.stats.num_running, "num_waiting": r.stats.num_waiting,
                 "num_paused": r.stats.num_paused,
                 "kv_usage": r.stats.kv_usage,
                 "output_tokens_per_s": r.stats.output_tokens_per_s,
                 "seconds_since_report": now - r.last_seen_s,
                 "predictor_address": r.stats.predictor_address, "extra": dict(r.stats.extra)}
                for r in self._replicas.values()
            ],
        }
