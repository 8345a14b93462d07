"""The replica: a Serve deployment (one per GPU class) that owns one engine.

It streams token deltas for :class:`~replicas.types.ReplicaRequest`, aborts the engine
request when its caller goes away (cancellation closes the engine stream), reports its
state to the queue manager every ``stats_period_s`` and through ``record_routing_stats``,
and fails its health check when the engine has died.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig

from predictor_service.client import PredictorClient, resolver
from predictor_service.config import ClientConfig
from replicas.augmented import run_augmented
from replicas.coalesce import coalesce
from replicas.direct import run_direct
from replicas.config import ReplicaConfig
from replicas.engine import EngineDeadError, ReplicaEngine, VLLMEngine
from replicas.types import ReplicaLimits, ReplicaRequest, ReplicaStats, TokenDelta

logger = logging.getLogger("ray.serve")


class ReplicaCore:
    """Everything of the replica except Serve itself (unit-testable with a fake engine)."""

    def __init__(self, config: ReplicaConfig, engine: ReplicaEngine, replica_id: str,
                 deployment: str) -> None:
        self.config = config
        self.engine = engine
        self.replica_id = replica_id
        self.deployment = deployment
        self.active: set[str] = set()
        self.num_paused = 0
        self.limits = ReplicaLimits(config.engine.max_num_seqs, config.room.max_waiting_requests)
        #: The shared predictor's client (LAMPS will ask it at every resume).
        self.predictor: PredictorClient | None = None

    async def generate(self, request: ReplicaRequest) -> AsyncIterator[TokenDelta]:
        self.active.add(request.request_id)
        interval_s = self.config.stream_interval_ms / 1000.0
        source = (run_augmented(self.engine.generate, request, on_pause=self._on_pause)
                  if request.augmentation else self.engine.generate(request))
        try:
            async for delta in coalesce(source, interval_s):
                yield delta
        finally:
            self.active.discard(request.request_id)

    def _on_pause(self, paused: bool) -> None:
        self.num_paused += 1 if paused else -1

    def stats(self, engine_alive: bool = True) -> ReplicaStats:
        sink = self.engine.stats_sink
        return ReplicaStats(
            replica_id=self.replica_id, deployment=self.deployment,
            gpu_class=self.config.gpu_class, model=self.config.model_name, limits=self.limits,
            num_running=sink.num_running, num_waiting=sink.num_waiting,
            num_active_calls=len(self.active), num_paused=self.num_paused,
            active_request_ids=tuple(self.active),
            kv_usage=sink.kv_usage,
            output_tokens_per_s=sink.throughput.tokens_per_s(),
            num_output_tokens_total=sink.throughput.total_tokens,
            engine_alive=engine_alive, reported_at_s=time.time(),
            predictor_address=self.predictor.address if self.predictor else None,
            extra={"pid": float(os.getpid()),
                   "kv_bytes_per_token": float(self.engine.kv_bytes_per_token()),
                   "num_preempted_total": float(sink.num_preempted_total)})


@serve.deployment(
    max_ongoing_requests=1024,
    health_check_period_s=5,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=20,
    ray_actor_options={"num_cpus": 0},
    request_router_config=RequestRouterConfig(
        request_router_class="replicas.router:AssignedReplicaRouter",
        request_routing_stats_period_s=2.0,
    ),
)
class LLMReplica:
    async def __init__(self, config: dict[str, Any], queue_manager: Any = None,
                       predictor: Any = None, predictor_client: dict[str, Any] | None = None) -> None:
        cfg = ReplicaConfig.model_validate(config)
        ctx = serve.get_replica_context()
        engine = VLLMEngine(cfg)
        self._core = ReplicaCore(cfg, engine, ctx.replica_id.unique_id, ctx.deployment)
        if predictor is not None or (predictor_client or {}).get("address"):
            # The replica's own client of the shared predictor (LAMPS asks it at every
            # resume); it learns the address now, off the request path.
            client = self._core.predictor = PredictorClient(
                ClientConfig.model_validate(predictor_client or {}),
                resolve=resolver(predictor) if predictor is not None else None)
            self._connecting = asyncio.get_running_loop().create_task(client.connect_forever())
        self._queue_manager = queue_manager
        self._engine_alive = True
        if queue_manager is not None:
            await self._report()
            self._reporter = asyncio.get_running_loop().create_task(self._report_loop())

    async def generate(self, request: ReplicaRequest,
                       target_replica: str | None = None) -> AsyncIterator[TokenDelta]:
        try:
            async for delta in self._core.generate(request):
                yield delta
        except EngineDeadError:
            if self._engine_alive:  # tell the queue manager now, not at the next report
                self._engine_alive = False
                asyncio.get_running_loop().create_task(self._report_quietly())
            raise

    async def stats(self) -> ReplicaStats:
        return self._core.stats(self._engine_alive)

    async def record_routing_stats(self) -> dict[str, Any]:
        s = self._core.stats(self._engine_alive)
        return {"num_running": s.num_running, "num_waiting": s.num_waiting,
                "kv_usage": s.kv_usage, "output_tokens_per_s": s.output_tokens_per_s,
                "gpu_class": s.gpu_class}

    async def check_health(self) -> None:
        try:
            await self._core.engine.check_health()
        except EngineDeadError:
            self._engine_alive = False
            await self._report_quietly()
            raise

    async def _report(self) -> None:
        await self._queue_manager.report.remote(self._core.stats(self._engine_alive))

    async def _report_quietly(self) -> None:
        if self._queue_manager is None:
            return
        try:
            await asyncio.wait_for(self._report(), timeout=2.0)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the replica is shutting down
            # a call cut off by a dying queue manager: keep reporting to its successor
            logger.warning("a report to the queue manager was cancelled")
        except Exception as exc:  # noqa: BLE001 - reporting is best effort
            logger.warning("could not report to the queue manager: %s", exc)

    async def _report_loop(self) -> None:
        period = self._core.config.stats_period_s
        while True:
            await asyncio.sleep(period)
            self._engine_alive = self._engine_alive and getattr(self._core.engine, "alive", True)
            await self._report_quietly()

    async def bench_direct(self, prompt_token_ids: list[int], max_tokens: int,
                           num_requests: int, concurrency: int) -> list[dict[str, float]]:
        """Benchmark helper: run requests straight against this replica's engine
        (no ingress, no queue manager) and return per-request timings."""
        return await run_direct(self._core.engine, prompt_token_ids, max_tokens,
                                num_requests, concurrency)

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None:
            core.engine.shutdown()
