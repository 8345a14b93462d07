"""The replicas the queue manager knows: joined by their first report, refreshed by each
one, healthy while their engine lives and they keep reporting, forgotten when silent for
``replica_timeout_s`` (their in-flight requests with them)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from orchestrator.config import QueueConfig
from orchestrator.estimator import WaitEstimator, speed_from_profile
from orchestrator.fleet import ReplicaState
from orchestrator.ledger import InFlightLedger
from replicas.types import ReplicaStats

logger = logging.getLogger(__name__)


class ReplicaRegistry:
    def __init__(self, config: QueueConfig, ledger: InFlightLedger,
                 estimator: WaitEstimator) -> None:
        self._config = config
        self._ledger = ledger
        self._estimator = estimator
        self._states: dict[str, ReplicaState] = {}

    def update(self, stats: ReplicaStats, now_s: float) -> ReplicaState:
        """Take a replica's report: it joins, or its state and speed estimate refresh."""
        state = self._states.get(stats.replica_id)
        if state is None:
            logger.info("replica %s (%s, class %s) joined", stats.replica_id,
                        stats.deployment, stats.gpu_class)
            state = ReplicaState(stats=stats, last_seen_s=now_s,
                                 speed=speed_from_profile(stats.speed_profile,
                                                          stats.limits.max_num_seqs),
                                 ledger=self._ledger, max_kv_usage=self._config.max_kv_usage)
            self._states[stats.replica_id] = state
        else:
            state.stats = stats
            state.last_seen_s = now_s
        saturated = not state.has_room() or stats.num_waiting > 0
        state.speed = self._estimator.observe_replica(
            stats.replica_id, stats.speed_profile, stats.limits.max_num_seqs,
            stats.output_tokens_per_s, stats.num_running, saturated)
        return state

    def remove(self, replica_id: str) -> list[str]:
        """Forget a replica; the ids of the requests that were in flight on it."""
        state = self._states.pop(replica_id, None)
        self._estimator.forget_replica(replica_id)
        if state is None:
            return []
        return self._ledger.drop_replica(replica_id)

    def is_healthy(self, state: ReplicaState, now_s: float) -> bool:
        return (state.stats.engine_alive
                and now_s - state.last_seen_s <= self._config.replica_timeout_s)

    def healthy(self, now_s: float, model: str | None = None) -> list[ReplicaState]:
        return [r for r in self._states.values()
                if self.is_healthy(r, now_s) and (model is None or r.stats.model == model)]

    def reap(self, now_s: float) -> list[str]:
        """Remove replicas silent for longer than ``replica_timeout_s``; their ids."""
        silent = [rid for rid, r in self._states.items()
                  if now_s - r.last_seen_s > self._config.replica_timeout_s]
        for rid in silent:
            logger.warning("replica %s silent for %.1fs: removed", rid,
                           now_s - self._states[rid].last_seen_s)
            self.remove(rid)
        return silent

    def get(self, replica_id: str) -> ReplicaState | None:
        return self._states.get(replica_id)

    def __getitem__(self, replica_id: str) -> ReplicaState:
        return self._states[replica_id]

    def __contains__(self, replica_id: object) -> bool:
        return replica_id in self._states

    def __iter__(self) -> Iterator[ReplicaState]:
        return iter(self._states.values())  # dispatch walks it on every call: no copy

    def __len__(self) -> int:
        return len(self._states)
