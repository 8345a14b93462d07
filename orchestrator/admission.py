"""Admission: whether a request may join the global queue, and the deadline it carries.

The waiting-time estimator (:mod:`orchestrator.estimator`) predicts the request's first
token and end on the best healthy replica after the queue ahead of it; if that misses its
SLO, its class decides: 429 with ``Retry-After`` (``reject``) or admit best effort.  A full
queue or a model no healthy replica serves is refused at once."""

from __future__ import annotations

import itertools
from dataclasses import replace

from orchestrator.config import QueueConfig, SLOClass
from orchestrator.errors import (
    NoHealthyReplicaError,
    OverloadedError,
    SLOUnattainableError,
)
from orchestrator.estimator import WaitEstimator
from orchestrator.fleet import ReplicaState
from orchestrator.outcomes import Outcome
from orchestrator.policies.order import QueuePolicy
from orchestrator.queued import QueuedRequest
from orchestrator.tally import Tally
from replicas.types import SLOSpec


class Admission:
    def __init__(self, config: QueueConfig, slo_classes: dict[str, SLOClass],
                 estimator: WaitEstimator, policy: QueuePolicy, tally: Tally) -> None:
        self._config = config
        self._slo_classes = slo_classes
        self._estimator = estimator
        self._policy = policy
        self._tally = tally
        self._seq = itertools.count()

    def assess(self, request: QueuedRequest, replicas: list[ReplicaState], now_s: float) -> None:
        """Every admission check against the healthy ``replicas`` of its model; fills the
        request's arrival (if unstamped), default SLO, deadline, sequence and estimates.
        Raises a typed rejection."""
        config = self._config
        arrival_s = request.arrival_s
        if arrival_s is None:
            arrival_s = now_s
            request.header = replace(request.header, arrival_s=now_s)
        if request.slo is None and config.default_slo_class is not None:
            c = self._slo_classes[config.default_slo_class]
            request.header = replace(request.header, slo=SLOSpec(
                class_name=config.default_slo_class, ttft_ms=c.ttft_ms, e2e_ms=c.e2e_ms))
        if not replicas:
            self._tally.outcome(Outcome.REJECTED_NO_REPLICA)
            raise NoHealthyReplicaError(
                f"no healthy replica serves model {request.model!r}; retry later",
                retry_after_s=config.retry_after_min_s)
        if len(self._policy) >= config.max_queued:
            self._tally.outcome(Outcome.REJECTED_OVERLOAD)
            raise OverloadedError(
                f"the queue is full ({config.max_queued} requests waiting); retry later",
                retry_after_s=self.retry_after_s(now_s))
        self._estimator.annotate(request)
        views = [r.view() for r in replicas]
        best_ttft, best_end = min(self._estimator.service_s(request, v) for v in views)
        slo = request.slo
        if slo is not None and slo.ttft_ms is not None:
            request.deadline_s = arrival_s + slo.ttft_ms / 1000.0
        elif slo is not None and slo.e2e_ms is not None:
            request.deadline_s = arrival_s + slo.e2e_ms / 1000.0 - (best_end - best_ttft)
        request.seq = next(self._seq) + 1
        request.enqueued_s = now_s
        wait = self._estimator.admission_wait_s(request, self._policy.key(request), views)
        request.est_wait_s = float(wait)
        if slo is None or request.evicted:
            return
        misses = ((slo.ttft_ms is not None
                   and now_s + wait + best_ttft > arrival_s + slo.ttft_ms / 1000.0)
                  or (slo.e2e_ms is not None
                      and now_s + wait + best_end > arrival_s + slo.e2e_ms / 1000.0))
        if not misses:
            return
        cls = self._slo_classes.get(slo.class_name or "")
        rule = cls.admission if cls is not None else config.explicit_slo_admission
        if rule == "reject":
            self._tally.outcome(Outcome.REJECTED_SLO)
            self._tally.slo(request, met=False)
            target = (f"ttft_ms {slo.ttft_ms}" if slo.ttft_ms is not None else f"e2e_ms {slo.e2e_ms}")
            raise SLOUnattainableError(
                f"slo: no replica is estimated to meet this request's SLO (class "
                f"{request.slo_class!r}, {target}); estimated queue wait {wait:.1f}s",
                param="slo", retry_after_s=min(config.retry_after_max_s,
                                               max(config.retry_after_min_s, wait)))
        request.best_effort = True
        self._tally.counters["best_effort"] += 1

    def expire_at_s(self, request: QueuedRequest) -> float:
        """When an assessed request leaves the queue unserved: ``queue_timeout_s`` after
        admission, or at its deadline if its class expires."""
        expire_at = request.enqueued_s + self._config.queue_timeout_s
        cls = self._slo_classes.get(request.slo.class_name or "") if request.slo else None
        if cls is not None and cls.expire:
            expire_at = min(expire_at, request.deadline_s)
        return expire_at

    def continue_after(self, seq: int) -> None:
        """A recovered request carries ``seq``: later admissions are numbered after it."""
        self._seq = itertools.count(max(next(self._seq), seq) + 1)

    def retry_after_s(self, now_s: float) -> float:
        """How long a rejected client should wait: the queue drained at the recent rate."""
        return self._tally.retry_after_s(len(self._policy), now_s, self._config.retry_after_min_s,
                                         self._config.retry_after_max_s)
