"""The replica: a Serve deployment (one per GPU class) that owns one engine.

It streams token deltas for :class:`~replicas.types.ReplicaRequest`, aborts the engine
request when its caller goes away (cancellation closes the engine stream), reports its
state to the queue manager every ``stats_period_s``, and fails its health check when the engine has died.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig

from predictor_service.client import PredictorClient, resolver
from predictor_service.config import ClientConfig
from predictor_service.types import LengthQuery, Prediction
from replicas.coalesce import coalesce
from replicas.config import ReplicaConfig
from replicas.direct import run_direct
from replicas.engine import EngineDeadError, ReplicaEngine, VLLMEngine
from replicas.metrics import ReplicaMetrics
from replicas.pause_budget import PauseBudget, is_starved
from replicas.policy import BatchLoad, ReplicaProfile, make_policy
from replicas.profiling import default_profile, profile_engine
from replicas.scheduler_ops import Configure, SchedulerState
from replicas.stats_report import PolicyCounters, ReplicaReportInputs, replica_stats
from replicas.tool_calls import ToolCallParser
from replicas.tools import ToolExecutor, parse_tools
from replicas.turns import Predict, TurnRunner, outlook_extra, predicted_outlook
from replicas.types import (
    AugTurn,
    ReplicaLimits,
    ReplicaRequest,
    ReplicaStats,
    RequestEvictedError,
    TokenDelta,
)

logger = logging.getLogger("ray.serve")


class ReplicaCore:
    """Everything of the replica except Serve itself (unit-testable with a fake engine)."""

    def __init__(self, config: ReplicaConfig, engine: ReplicaEngine, replica_id: str,
                 deployment: str, tools: ToolExecutor | None = None,
                 predict_resume: Predict | None = None) -> None:
        """``predict_resume``: the prediction at each resume (default: ask the shared
        predictor's client; a benchmark replaying on one replica passes the true lengths)."""
        self.config = config
        self.engine = engine
        self.replica_id = replica_id
        self.deployment = deployment
        self.active: set[str] = set()
        #: Active requests without a first token yet -> set when the queue manager evicts.
        self.unstarted: dict[str, asyncio.Event] = {}
        self.num_evicted = 0
        self.num_paused = 0
        self.limits = ReplicaLimits(config.engine.max_num_seqs, config.room.max_waiting_requests)
        engine_pids = engine.process_ids()
        #: Stats that never change for this replica's life (a dead engine: a new replica).
        self._fixed_stats = {"pid": float(os.getpid()),
                             "engine_pid": float(engine_pids[0]) if engine_pids else 0.0}
        #: The shared predictor's client: asked again at every resume of a request.
        self.predictor: PredictorClient | None = None
        sched = config.scheduling
        self.policy = make_policy(sched.policy)
        self.profile: ReplicaProfile = default_profile(sched.profiling, engine.kv_bytes_per_token(),
                                                       engine.chunk_tokens)
        self.load = BatchLoad()
        #: The scheduler's latest answer to the "state" utility call.
        self.engine_state: SchedulerState | None = None
        self.budget = PauseBudget(config.engine.max_num_seqs - sched.reserved_slots,
                                  sched.pause_kv_watermark)
        self.turns = TurnRunner(engine, self.policy, profile=lambda: self.profile,
                                load=lambda: self.load, kv_usage=self._kv_usage,
                                budget=self.budget, tools=tools, tokenize=self._tokenize,
                                predict=predict_resume or self._predict_resume,
                                on_pause=self._on_pause,
                                parser=self._parser(engine, tools),
                                max_tool_rounds=config.max_tool_rounds,
                                max_model_len=engine.max_model_len or config.engine.max_model_len)

    @staticmethod
    def _parser(engine: ReplicaEngine, tools: ToolExecutor | None) -> ToolCallParser | None:
        tokenizer = engine.tokenizer
        if tools is None or not tools.names or tokenizer is None:
            return None
        try:
            return ToolCallParser(tokenizer)
        except ValueError as exc:
            logger.warning("server-side tool calls are off for this model: %s", exc)
            return None

    def _kv_usage(self) -> float:
        # The stat logger's value is fresh after every engine step (paused sessions' blocks
        # included); the utility-call state only after the last refresh.
        return float(self.engine.stats_sink.kv_usage)

    def _tokenize(self, text: str) -> list[int]:
        return self.engine.tokenize(text)

    async def _predict_resume(self, request: ReplicaRequest, history: list[int],
                              turn: AugTurn) -> Prediction | None:
        if self.predictor is None:
            return None
        # the text the predictor learned from: the context's tail, decoded (its models
        # weigh the latest instruction or API result most)
        tail = history[-512:]
        text = self.engine.detokenize(tail)
        return await self.predictor.predict(LengthQuery(
            model=request.model, prompt_text=text, prompt_token_ids=() if text else tuple(tail),
            prompt_tokens=len(history), api_names=(turn.api_name,) if turn.api_name else (),
            max_tokens=request.sampling.max_tokens))

    async def start(self) -> None:
        """Profile the engine and hand the policy to its scheduler."""
        sched = self.config.scheduling
        self.profile = await profile_engine(
            self.engine, sched.profiling, self.config.model_name,
            self.engine.max_model_len or self.config.engine.max_model_len or 2048,
            self.engine.chunk_tokens)
        self.engine_state = await self.engine.configure_scheduler(Configure(
            self.policy.name, self.profile, rerank_every_steps=sched.rerank_every_steps,
            starvation_threshold_steps=sched.starvation_threshold_steps,
            live_profile=sched.live_profile))

    async def refresh(self) -> None:
        """Pull the scheduler's state: KV, batch load, live profile, scheduling counters."""
        state = self.engine_state = await self.engine.scheduler_state()
        self.load = BatchLoad(state.tokens_in_flight, state.running_tokens)
        if state.live_profile.source == "live" and self.config.scheduling.live_profile:
            self.profile = state.live_profile

    async def enforce_budget(self, now_s: float) -> int:
        """Demote preserved sessions when KV or slots run short; returns how many."""
        sink = self.engine.stats_sink
        kv_usage = self._kv_usage()
        victims = self.budget.to_demote(kv_usage, now_s, starved=is_starved(
            sink.num_waiting, sink.num_running, len(self.budget),
            self.config.engine.max_num_seqs, kv_usage, self.budget.kv_watermark))
        for v in victims:
            await v.demote()
        if victims:
            await self.refresh()
        return len(victims)

    async def budget_loop(self) -> None:
        """Refresh the scheduler's state and enforce the pause budget, forever (loop edge:
        one failed round is logged; a dead engine ends the loop)."""
        period = self.config.scheduling.budget_check_s
        refresh_every = max(1, int(self.config.stats_period_s / period))
        n = 0
        while True:
            await asyncio.sleep(period)
            n += 1
            try:
                if n % refresh_every == 0:
                    await self.refresh()
                await self.enforce_budget(time.monotonic())
            except EngineDeadError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the loop alive
                logger.warning("pause-budget round failed: %s", exc)

    async def generate(self, request: ReplicaRequest) -> AsyncIterator[TokenDelta]:
        self.active.add(request.request_id)
        interval_s = self.config.stream_interval_ms / 1000.0
        if request.augmentation:
            source = self.turns.run(request)
        elif request.tool_names and self.turns.parser is not None:
            source = self.turns.run_tools(request)
        else:
            extra = None
            if self.policy.ranks:
                extra = outlook_extra(predicted_outlook(len(request.prompt_token_ids),
                                                        request.prediction, None))
            source = self.engine.generate(request, extra)
        deltas = coalesce(source, interval_s)
        first = True
        try:
            # the first delta always comes from here (the stream ends in it if it has none)
            async for delta in self._until_started(request.request_id, deltas):
                if first:
                    delta, first = dataclasses.replace(delta, served_by=self.replica_id), False
                yield delta
            async for delta in deltas:
                yield delta
        finally:
            self.active.discard(request.request_id)
            self.unstarted.pop(request.request_id, None)
            await deltas.aclose()

    async def _until_started(self, request_id: str,
                             deltas: AsyncIterator[TokenDelta]) -> AsyncIterator[TokenDelta]:
        """Deltas up to the first token, abandoned (the engine request aborted) with
        :class:`RequestEvictedError` if the queue manager evicts the request meanwhile."""
        evicted = self.unstarted[request_id] = asyncio.Event()
        evict_wait = asyncio.ensure_future(evicted.wait())
        try:
            while True:
                step = asyncio.ensure_future(deltas.__anext__())
                try:
                    await asyncio.wait({step, evict_wait}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not step.done():
                        step.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await step
                if not step.done() or step.cancelled():
                    self.num_evicted += 1
                    raise RequestEvictedError(request_id, self.replica_id)
                try:
                    delta = step.result()
                except StopAsyncIteration:
                    return
                yield delta
                if delta.token_ids:
                    return
        finally:
            self.unstarted.pop(request_id, None)
            evict_wait.cancel()

    def evict(self, request_ids: list[str]) -> int:
        """Abort these requests if they have not started (the caller re-queues them)."""
        n = 0
        for request_id in request_ids:
            event = self.unstarted.get(request_id)
            if event is not None:
                event.set()
                n += 1
        return n

    def _on_pause(self, paused: bool) -> None:
        self.num_paused += 1 if paused else -1

    def report_inputs(self, engine_alive: bool = True) -> ReplicaReportInputs:
        """What the report reads, now (the pure :func:`replica_stats` builds it)."""
        sink, c, st = self.engine.stats_sink, self.turns.counters, self.engine_state
        counters = PolicyCounters(
            calls_by_strategy=dict(c.calls_by_strategy),
            num_preserved_paused=len(self.budget), num_demotions=self.budget.num_demotions,
            recomputed_tokens=c.recomputed_tokens,
            num_starvation_promotions=st.num_starvation_promotions if st else 0,
            num_preempted_total=sink.num_preempted_total,
            score_ms_per_step_p50=st.score_ms_per_step_p50 if st else 0.0,
            score_ms_per_step_max=st.score_ms_per_step_max if st else 0.0)
        return ReplicaReportInputs(
            replica_id=self.replica_id, deployment=self.deployment,
            gpu_class=self.config.gpu_class, model=self.config.model_name, limits=self.limits,
            num_running=sink.num_running, num_waiting=sink.num_waiting,
            active_request_ids=tuple(self.active), unstarted_request_ids=tuple(self.unstarted),
            num_paused=self.num_paused, kv_usage=sink.kv_usage,
            output_tokens_per_s=sink.throughput.tokens_per_s(),
            num_output_tokens_total=sink.throughput.total_tokens,
            profile=self.profile, counters=counters, engine_alive=engine_alive,
            predictor_address=self.predictor.address if self.predictor else None,
            platform={**self._fixed_stats, "num_evicted": float(self.num_evicted)})

    def stats(self, engine_alive: bool = True) -> ReplicaStats:
        return replica_stats(self.report_inputs(engine_alive), time.time())


@serve.deployment(
    max_ongoing_requests=1024,
    health_check_period_s=5,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=20,
    ray_actor_options={"num_cpus": 0},
    request_router_config=RequestRouterConfig(
        request_router_class="replicas.router:AssignedReplicaRouter",
    ),
)
class LLMReplica:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
            self, config: dict[str, Any], queue_manager: Any = None, predictor: Any = None,
            predictor_client: dict[str, Any] | None = None,
            tools: dict[str, Any] | None = None) -> None:
        cfg = ReplicaConfig.model_validate(config)
        ctx = serve.get_replica_context()
        engine = VLLMEngine(cfg)
        executor = ToolExecutor(parse_tools(tools or {}))
        self._core = ReplicaCore(cfg, engine, ctx.replica_id.unique_id, ctx.deployment, executor)
        await self._core.start()
        self._metrics = ReplicaMetrics()
        loop = asyncio.get_running_loop()
        self._budget_task = loop.create_task(self._budget_loop())
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

    async def check_health(self) -> None:
        try:
            await self._core.engine.check_health()
        except EngineDeadError:
            self._engine_alive = False
            await self._report_quietly()
            raise

    async def _report(self) -> None:
        stats = self._core.stats(self._engine_alive)
        self._metrics.publish(stats, self._core.policy.name)
        evict = await self._queue_manager.report.remote(stats)
        if evict:
            self._core.evict(list(evict))

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

    async def _budget_loop(self) -> None:
        try:
            await self._core.budget_loop()
        except EngineDeadError:
            self._engine_alive = False

    async def scheduler_state(self) -> dict[str, Any]:
        """The engine scheduler's state (tests and operators)."""
        await self._core.refresh()
        state = self._core.engine_state
        return state.to_wire() if state else {}

    async def _report_loop(self) -> None:
        period = self._core.config.stats_period_s
        while True:
            await asyncio.sleep(period)
            self._engine_alive = self._engine_alive and self._core.engine.alive
            await self._report_quietly()

    async def bench_direct(self, prompt_token_ids: list[int], max_tokens: int,
                           num_requests: int, concurrency: int) -> dict[str, Any]:
        """Benchmark helper: run requests straight against this replica's engine
        (no ingress, no queue manager) and return per-request timings."""
        return await run_direct(self._core.engine, prompt_token_ids, max_tokens,
                                num_requests, concurrency)

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None:
            core.engine.shutdown()
