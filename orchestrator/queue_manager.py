"""The global queue manager: one logical actor (a one-replica Serve deployment) around
the plain-Python :class:`~orchestrator.dispatcher.Dispatcher` and a durable store.

``enqueue`` admits a request — written to the store before it is acknowledged — and
returns its :class:`Assignment` once a replica has room; replicas ``report`` their stats
(and get back the ids to evict); the ingress calls ``complete`` when the stream ends.
It never carries tokens.  When Serve restarts the actor, ``__init__`` recovers every
unfinished request from the store; callers re-attach with ``enqueue(..., resume=True)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve

from orchestrator.config import QueueConfig, SLOClass
from orchestrator.dispatcher import Assignment, Dispatcher
from orchestrator.errors import (
    AugserveError,
    DeadlineExceededError,
    DuplicateRequestError,
    DurabilityUnavailableError,
    QueueTimeoutError,
    QueueUnavailableError,
)
from orchestrator.journal import Dispatched, Finished
from orchestrator.metrics import QueueMetrics
from orchestrator.outcomes import Outcome
from orchestrator.queued import QueuedRequest
from orchestrator.store import (
    MemoryStore,
    QueueStore,
    RateLimitedLog,
    RequestAlreadyFinishedError,
    StoreUnavailableError,
    make_store,
)
from replicas.types import ReplicaStats

logger = logging.getLogger("ray.serve")


def _finished_error(request_id: str, outcome: str, resume: bool) -> AugserveError:
    """A submission of an id that finished recently: 409; a caller re-attaching after a
    restart gets what happened to its request meanwhile."""
    if resume and outcome == Outcome.EXPIRED.value:
        return DeadlineExceededError("the request's SLO deadline passed while the queue "
                                     "manager restarted", param="slo")
    if resume and outcome == Outcome.ABANDONED.value:
        return QueueUnavailableError("the request was dropped while the queue manager "
                                     "restarted; retry", retry_after_s=1.0)
    return DuplicateRequestError(
        f"request id {request_id!r} already finished ({outcome}); use a new X-Request-Id",
        param="X-Request-Id")


class QueueService:
    """The asyncio side of the queue: futures for waiting callers, the store, a tick."""

    def __init__(self, config: QueueConfig, clock=time.time,
                 metrics: QueueMetrics | None = None,
                 slo_classes: dict[str, SLOClass] | None = None,
                 store: QueueStore | None = None) -> None:
        self.dispatcher = Dispatcher(config, clock, slo_classes=slo_classes)
        self.store = store or MemoryStore()
        self.required = config.durability.mode == "required"
        self._waiters: dict[str, asyncio.Future[Assignment]] = {}
        self._metrics = metrics
        self._warn = RateLimitedLog(logger)
        self.num_nondurable = 0
        self._groups_seen: set[tuple[str, str]] = set()

    async def start(self) -> int:
        """Connect the store and recover what it holds; returns how many were recovered
        (-1: the store did not answer; recovery then retries in the background while the
        manager serves — new requests per the durability mode)."""
        await self.store.start()
        try:
            return await self.recover()
        except StoreUnavailableError as exc:
            logger.warning("queue manager: the store is unavailable at start (%s); serving, "
                           "recovering once it answers", exc)
            self._recovering = asyncio.get_running_loop().create_task(self._recover_later())
            return -1

    async def _recover_later(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.recover()
                self.pump()
                return
            except StoreUnavailableError:
                continue

    async def recover(self) -> int:
        grace = self.dispatcher.config.durability.reattach_grace_s
        recovered = await self.store.load()
        for stored in recovered:
            if stored.state == "queued":
                self.dispatcher.restore_queued(stored.request, grace)
            else:
                stored.request.recovered_deployment = stored.deployment or ""
                stored.request.recovered_gpu_class = stored.gpu_class or ""
                self.dispatcher.restore_dispatched(stored.request, stored.replica_id or "")
        if recovered:
            logger.warning("queue manager recovered %d unfinished requests from the store "
                           "(%d queued)", len(recovered),
                           sum(1 for s in recovered if s.state == "queued"))
            if self._metrics:
                self._metrics.recoveries.inc(len(recovered))
        return len(recovered)

    async def enqueue(self, request: QueuedRequest, retry: bool = False,
                      resume: bool = False) -> Assignment:
        """Admit and wait for an assignment.

        ``retry``: the request's replica failed before its first token, or evicted it;
        release that assignment and queue it again.  ``resume``: the caller lost its queue
        manager (restart) and re-attaches; a request this manager knows is not queued
        twice."""
        rid = request.request_id
        if resume:
            known = self.dispatcher.attach(rid)
            if isinstance(known, Assignment):
                return known
            if known:
                return await self._wait(rid)
        if retry:
            self.dispatcher.release_for_retry(
                rid, Outcome.EVICTED if request.evicted else Outcome.FAILED)
        try:
            self.dispatcher.assess(request)  # raises a typed rejection
        except AugserveError:
            if retry:  # its record (requeued) would otherwise stay behind
                self.store.finished(rid, Outcome.FAILED.value)
            raise
        try:
            durable = await self.store.put(request, required=self.required)
        except asyncio.CancelledError:
            self.store.finished(rid, Outcome.CANCELLED.value)  # the write may have landed
            raise
        except RequestAlreadyFinishedError as exc:
            raise _finished_error(rid, exc.outcome, resume) from None
        except StoreUnavailableError as exc:
            self.dispatcher.outcomes[Outcome.REJECTED_UNDURABLE] += 1
            raise DurabilityUnavailableError(
                f"the queue's durable store is unavailable ({exc}); durability is required, "
                "so no new request is accepted now", retry_after_s=2.0) from None
        if not durable:
            self.num_nondurable += 1
            self._warn.warning("request accepted without durability (the store is not "
                               "reachable; it is written once it is back)")
            if self._metrics:
                self._metrics.nondurable.inc()
        self.dispatcher.insert(request)
        return await self._wait(rid)

    async def _wait(self, request_id: str) -> Assignment:
        future: asyncio.Future[Assignment] = asyncio.get_running_loop().create_future()
        old = self._waiters.get(request_id)
        if old is not None and not old.done():
            old.cancel()
        self._waiters[request_id] = future
        self.pump()
        try:
            return await future
        except asyncio.CancelledError:
            if self._waiters.get(request_id) is future and self.dispatcher.cancel(request_id):
                self.pump()
            raise
        finally:
            if self._waiters.get(request_id) is future:
                del self._waiters[request_id]

    def pump(self) -> None:
        for assignment in self.dispatcher.dispatch():
            future = self._waiters.get(assignment.request_id)
            if future is None or future.done():  # caller vanished in the same instant
                self.dispatcher.cancel(assignment.request_id)
                continue
            future.set_result(assignment)
            if self._metrics:
                self._metrics.queue_wait.observe(assignment.queued_s,
                                                 tags={"gpu_class": assignment.gpu_class})
        self._drain_journal()

    def _drain_journal(self) -> None:
        journal, self.dispatcher.journal = self.dispatcher.journal, []
        for event in journal:
            if isinstance(event, Dispatched):
                self.store.dispatched(event.request_id, event.replica_id, event.deployment,
                                      event.gpu_class)
            elif isinstance(event, Finished):
                self.store.finished(event.request_id, event.outcome.value)
            else:
                self.store.requeued(event.request_id)

    def complete(self, request_id: str, outcome: Outcome, slo_met: bool | None = None) -> bool:
        released = self.dispatcher.complete(request_id, outcome, slo_met)
        if released and self._metrics:
            self._metrics.admissions.inc(tags={"outcome": outcome.value})
        self.pump()
        return released

    def cancel(self, request_id: str) -> bool:
        """Withdraw a request (its caller went away); a waiting ``enqueue`` is resolved."""
        released = self.dispatcher.cancel(request_id)
        future = self._waiters.get(request_id)
        if future is not None and not future.done():
            future.cancel()
        self.pump()
        return released

    def report(self, stats: ReplicaStats) -> list[str]:
        evict = self.dispatcher.report(stats)
        self.pump()
        return evict

    def tick(self) -> None:
        for request, slo_deadline in self.dispatcher.expire():
            if slo_deadline:
                error: Exception = DeadlineExceededError(
                    f"the request's SLO deadline (class {request.slo_class!r}) passed while it "
                    "was queued", param="slo")
            else:
                error = QueueTimeoutError(
                    f"request waited longer than {self.dispatcher.config.queue_timeout_s:g}s in the "
                    "queue", retry_after_s=self.dispatcher.retry_after_s())
            self._fail(request.request_id, error)
        self.dispatcher.reap_replicas()
        self.dispatcher.run_pass()
        # Queued requests of a model that lost its last replica stay queued (until they
        # expire): the replica is usually being restarted by Serve.
        self.pump()
        self._update_gauges()

    def _fail(self, request_id: str, error: Exception) -> None:
        future = self._waiters.get(request_id)
        if future is not None and not future.done():
            future.set_exception(error)

    def stats(self) -> dict[str, Any]:
        snap = self.dispatcher.snapshot()
        snap["durability"] = {"mode": self.dispatcher.config.durability.mode,
                              "store": self.store.name, "durable": self.store.durable,
                              "nondurable_admissions": self.num_nondurable,
                              **self.store.stats()}
        return snap

    def _update_gauges(self) -> None:
        m = self._metrics
        if not m:
            return
        m.queue_length.set(self.dispatcher.num_queued)
        m.in_flight.set(self.dispatcher.num_in_flight)
        sizes = self.dispatcher.policy.group_sizes()
        self._groups_seen |= set(sizes)
        for model, cls in self._groups_seen:  # an emptied group reads 0, not its last size
            m.group_length.set(sizes.get((model, cls), 0), tags={"model": model, "slo_class": cls})
        err = self.dispatcher.estimator.error_stats()["estimator_error_median"]
        if err == err:  # not NaN
            m.estimator_error.set(err)
        m.durable.set(1.0 if self.store.durable else 0.0)
        m.publish_counters(self.dispatcher)


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=100_000,
    ray_actor_options={"num_cpus": 0},
    health_check_period_s=5,
)
class QueueManager:
    async def __init__(self, config: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        queue = QueueConfig.model_validate(config["queue"])
        classes = {k: SLOClass.model_validate(v) for k, v in config["slo_classes"].items()}
        store_config = queue.durability.store_config()  # reads redis_url_env here
        store = make_store(store_config)
        if store_config.redis_url is None:
            logger.warning("queue durability: no redis_url; accepted requests are kept in "
                           "memory only and are lost if the queue manager restarts")
        self._service = QueueService(queue, metrics=QueueMetrics(), slo_classes=classes,
                                     store=store)
        await self._service.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def enqueue(self, request: QueuedRequest, retry: bool = False,
                      resume: bool = False) -> Assignment:
        return await self._service.enqueue(request, retry, resume)

    async def complete(self, request_id: str, outcome: str = Outcome.COMPLETED.value,
                       slo_met: bool | None = None) -> bool:
        return self._service.complete(request_id, Outcome(outcome), slo_met)

    async def complete_many(self, finished: list[tuple[str, str, bool | None]]) -> int:
        """Release several requests in one call (the ingress batches its notices)."""
        return sum(self._service.complete(rid, Outcome(outcome), met)
                   for rid, outcome, met in finished)

    async def cancel(self, request_id: str) -> bool:
        return self._service.cancel(request_id)

    async def report(self, stats: ReplicaStats) -> list[str]:
        return self._service.report(stats)

    async def stats(self) -> dict[str, Any]:
        return self._service.stats()

    async def check_health(self) -> None:
        if self._ticker.done():
            raise RuntimeError("the queue manager's tick loop stopped")

    async def _tick_loop(self) -> None:
        period = self._service.dispatcher.config.tick_s
        while True:
            await asyncio.sleep(period)
            try:
                self._service.tick()
            except Exception:  # noqa: BLE001 - keep ticking; the error is logged
                logger.exception("queue manager tick failed")
