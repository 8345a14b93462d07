"""What the queue manager knows of each replica, and its answer to the ingress."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.estimator import ReplicaSpeed, ReplicaView
from orchestrator.ledger import InFlightLedger
from replicas.types import ReplicaStats


@dataclass(slots=True)
class ReplicaState:
    stats: ReplicaStats
    last_seen_s: float
    speed: ReplicaSpeed
    #: The queue manager's one record of what is in flight where.
    ledger: InFlightLedger
    #: requests the replica reports serving that this manager did not assign (e.g. it
    #: restarted and forgot them): they hold room too
    num_unknown_active: int = 0
    #: Pull threshold on the engine's KV usage (QueueConfig.max_kv_usage).
    max_kv_usage: float = 1.0
    #: Ids to abort here (evicted), handed to the replica with the answer to its report.
    pending_evictions: list[str] = field(default_factory=list)

    @property
    def replica_id(self) -> str:
        return self.stats.replica_id

    @property
    def in_flight(self) -> Mapping[str, float]:
        """The requests dispatched here and not finished: {request id: dispatched at}."""
        return self.ledger.on(self.stats.replica_id)

    @property
    def model(self) -> str:
        return self.stats.model

    @property
    def num_holding(self) -> int:
        """Requests that hold engine room: in flight here plus those the replica serves
        that this manager does not know, less those paused on an API call (no engine
        slot while their tool runs)."""
        stats = self.stats
        return max(0, len(self.ledger.on(stats.replica_id)) + self.num_unknown_active
                   - stats.num_paused)

    @property
    def num_busy_seqs(self) -> int:
        """Engine sequences its held requests occupy (at most ``max_num_seqs``)."""
        return min(self.num_holding, self.stats.limits.max_num_seqs)

    @property
    def load_fraction(self) -> float:
        return self.num_holding / max(1, self.stats.limits.max_in_flight)

    def has_room(self) -> bool:
        """Pull: room in flight, and the engine's waiting count and KV usage under their
        thresholds in its last report."""
        return self._has_room(self.num_holding)

    def _has_room(self, num_holding: int) -> bool:
        stats = self.stats
        limits = stats.limits
        return (num_holding < limits.max_in_flight
                and stats.num_waiting <= limits.max_waiting_requests
                and stats.kv_usage < self.max_kv_usage)

    def view(self) -> ReplicaView:
        holding = self.num_holding
        stats = self.stats
        return ReplicaView(stats.replica_id, stats.model, self.speed, self._has_room(holding),
                           min(holding, stats.limits.max_num_seqs))


@dataclass(frozen=True, slots=True)
class Assignment:
    """The queue manager's answer to the ingress: where to run the request."""

    request_id: str
    replica_id: str
    deployment: str
    gpu_class: str
    queued_s: float
