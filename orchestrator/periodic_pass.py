"""The queue manager's periodic pass: every ``replan_period_s`` (or sooner when the
estimator's curve grew long) it walks the queue in dispatch order, refreshes the
replicas' virtual queues and the late marks, lets the planner re-plan, and chooses
evictions."""

from __future__ import annotations

import logging
import math
from typing import Any

from orchestrator.config import QueueConfig
from orchestrator.estimator import WaitEstimator
from orchestrator.eviction import choose_evictions
from orchestrator.ledger import InFlightLedger
from orchestrator.policies.order import QueuePolicy
from orchestrator.policies.qlm import Planner
from orchestrator.registry import ReplicaRegistry
from orchestrator.tally import Tally

logger = logging.getLogger(__name__)


class PeriodicPass:
    def __init__(self, config: QueueConfig, policy: QueuePolicy, planner: Planner,
                 estimator: WaitEstimator, replicas: ReplicaRegistry, ledger: InFlightLedger,
                 tally: Tally) -> None:
        self._config = config
        self._policy = policy
        self._planner = planner
        self._estimator = estimator
        self._replicas = replicas
        self._ledger = ledger
        self._tally = tally
        self._last_s = -math.inf

    def run(self, now_s: float, force: bool = False) -> dict[str, Any]:
        if not force and now_s - self._last_s < self._config.replan_period_s \
                and not self._estimator.needs_pass():
            return {}
        self._last_s = now_s
        views = [r.view() for r in self._replicas.healthy(now_s)]
        if self._policy.uses_late and self._estimator.mark_late(self._policy.live(), views, now_s):
            self._policy.rekey(now_s)  # the pass must see the order that dispatch will use
        result = self._estimator.run_pass(self._policy.ordered(now_s), views, now_s)
        try:
            done = self._planner.replan(result, now_s)
        except Exception:
            logger.exception("queue policy re-plan failed; plan cleared")
            self._planner.clear()
            done = {}
        if done.get("replanned"):
            self._tally.counters["replans"] += 1
        if self._config.eviction.enabled:
            self._evict(now_s)
        return done

    def _evict(self, now_s: float) -> None:
        healthy = self._replicas.healthy(now_s)
        queued_heads = {m for (m, _c) in self._policy.group_sizes()}
        for replica_id, request_id in choose_evictions(
                healthy, self._ledger, queued_heads, now_s, self._config.eviction.overhead_s):
            request = self._ledger.request(request_id)
            if request is None or request.evicted:
                continue
            request.evicted = True
            self._replicas[replica_id].pending_evictions.append(request_id)
            self._tally.counters["evictions"] += 1
            logger.info("evicting %s from %s (deadline in %.1fs)", request_id, replica_id,
                        request.deadline_s - now_s)
