"""The global queue manager: one logical actor (a one-replica Serve deployment) around
the plain-Python :class:`~orchestrator.dispatcher.Dispatcher`.

``enqueue`` admits a request and returns its :class:`Assignment` once a replica has
room; replicas ``report`` their stats; the ingress calls ``complete`` when the stream
ends.  It never carries tokens."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve

from orchestrator.config import QueueConfig
from orchestrator.dispatcher import Assignment, Dispatcher
from orchestrator.errors import QueueTimeoutError
from orchestrator.metrics import QueueMetrics
from orchestrator.outcomes import Outcome
from orchestrator.queue_policy import QueuedRequest
from replicas.types import ReplicaStats

logger = logging.getLogger("ray.serve")


class QueueService:
    """The asyncio side of the queue: futures for waiting callers, a periodic tick."""

    def __init__(self, config: QueueConfig, clock=time.monotonic,
                 metrics: QueueMetrics | None = None) -> None:
        self.core = Dispatcher(config, clock)
        self._waiters: dict[str, asyncio.Future[Assignment]] = {}
        self._metrics = metrics

    async def enqueue(self, request: QueuedRequest, retry: bool = False) -> Assignment:
        """Admit and wait for an assignment.  ``retry``: the request's replica failed before
        its first token; release that assignment and queue it again, in one step."""
        if retry:
            self.core.complete(request.request_id, Outcome.FAILED)
        self.core.admit(request)  # raises a typed rejection
        future: asyncio.Future[Assignment] = asyncio.get_running_loop().create_future()
        self._waiters[request.request_id] = future
        self.pump()
        try:
            return await future
        except asyncio.CancelledError:
            if self.core.cancel(request.request_id):
                self.pump()
            raise
        finally:
            self._waiters.pop(request.request_id, None)

    def pump(self) -> None:
        for assignment in self.core.dispatch():
            future = self._waiters.get(assignment.request_id)
            if future is None or future.done():  # caller vanished in the same instant
                self.core.cancel(assignment.request_id)
                continue
            future.set_result(assignment)
            if self._metrics:
                self._metrics.queue_wait.observe(assignment.queued_s,
                                                 tags={"gpu_class": assignment.gpu_class})
        self._update_gauges()

    def complete(self, request_id: str, outcome: Outcome) -> bool:
        released = self.core.complete(request_id, outcome)
        if released and self._metrics:
            self._metrics.admissions.inc(tags={"outcome": outcome.value})
        self.pump()
        return released

    def cancel(self, request_id: str) -> bool:
        """Withdraw a request (its caller went away); a waiting ``enqueue`` is resolved."""
        released = self.core.cancel(request_id)
        future = self._waiters.get(request_id)
        if future is not None and not future.done():
            future.cancel()
        self.pump()
        return released

    def report(self, stats: ReplicaStats) -> None:
        self.core.report(stats)
        self.pump()

    def tick(self) -> None:
        for request in self.core.expire():
            self._fail(request.request_id, QueueTimeoutError(
                f"request waited longer than {self.core.config.queue_timeout_s:g}s in the queue",
                retry_after_s=self.core.retry_after_s()))
        self.core.reap_replicas()
        # Queued requests of a model that lost its last replica stay queued (until
        # queue_timeout_s): the replica is usually being restarted by Serve.
        self.pump()

    def _fail(self, request_id: str, error: Exception) -> None:
        future = self._waiters.get(request_id)
        if future is not None and not future.done():
            future.set_exception(error)

    def _update_gauges(self) -> None:
        if self._metrics:
            self._metrics.queue_length.set(self.core.num_queued)
            self._metrics.in_flight.set(self.core.num_in_flight)


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=100_000,
    ray_actor_options={"num_cpus": 0},
    health_check_period_s=5,
)
class QueueManager:
    def __init__(self, config: dict[str, Any]) -> None:
        self._service = QueueService(QueueConfig.model_validate(config), metrics=QueueMetrics())
        self._ticker = asyncio.get_event_loop().create_task(self._tick_loop())

    async def enqueue(self, request: QueuedRequest, retry: bool = False) -> Assignment:
        return await self._service.enqueue(request, retry)

    async def complete(self, request_id: str, outcome: str = Outcome.COMPLETED.value) -> bool:
        return self._service.complete(request_id, Outcome(outcome))

    async def complete_many(self, finished: list[tuple[str, str]]) -> int:
        """Release several requests in one call (the ingress batches its notices)."""
        return sum(self._service.complete(rid, Outcome(outcome)) for rid, outcome in finished)

    async def cancel(self, request_id: str) -> bool:
        return self._service.cancel(request_id)

    async def report(self, stats: ReplicaStats) -> None:
        self._service.report(stats)

    async def stats(self) -> dict[str, Any]:
        return self._service.core.snapshot()

    async def check_health(self) -> None:
        if self._ticker.done():
            raise RuntimeError("the queue manager's tick loop stopped")

    async def _tick_loop(self) -> None:
        period = self._service.core.config.tick_s
        while True:
            await asyncio.sleep(period)
            try:
                self._service.tick()
            except Exception:  # noqa: BLE001 - keep ticking; the error is logged
                logger.exception("queue manager tick failed")

