"""The replica's engine seam: :class:`ReplicaEngine` is what the deployment needs, and
:class:`VLLMEngine` implements it on one vLLM ``AsyncLLM`` with the priority scheduler.
Unit tests implement the same protocol with a fake; integration tests use the real one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

from replicas.config import ReplicaConfig
from replicas.engine_stats import EngineStatsSink, make_stat_logger_factory
from replicas.policy.profile import StepRecord
from replicas.scheduler_ops import (Configure, GetState, SchedulerOp, SchedulerState, TakeSteps,
                                    steps_from_wire)
from replicas.types import ReplicaRequest, SamplingSpec, TokenDelta

logger = logging.getLogger(__name__)

#: The replica's scheduler subclass, imported inside the engine process.
SCHEDULER_CLS = "replicas.vllm_scheduler.AugserveScheduler"


class EngineRequestError(Exception):
    """The engine refused one request (bad parameters); the engine itself is fine."""


class EngineDeadError(Exception):
    """The engine is gone; the replica must be replaced."""


class ReplicaEngine(Protocol):
    stats_sink: EngineStatsSink
    #: The engine's context length and prefill chunk (``max_num_batched_tokens``); None
    #: where the engine has none of its own (then the config's values stand).
    max_model_len: int | None
    chunk_tokens: int | None

    @property
    def alive(self) -> bool: ...

    @property
    def tokenizer(self) -> Any | None:
        """The model's tokenizer (None: no tool-call parsing on this engine)."""
        ...

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, token_ids: list[int]) -> str: ...

    def generate(self, request: ReplicaRequest,
                 extra_args: dict[str, Any] | None = None) -> AsyncIterator[TokenDelta]: ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None: ...

    def kv_bytes_per_token(self) -> int: ...

    def process_ids(self) -> list[int]: ...

    def open_session(self, request_id: str, priority: int = 0) -> EngineSession: ...

    async def configure_scheduler(self, op: Configure) -> SchedulerState: ...

    async def scheduler_state(self) -> SchedulerState: ...

    async def take_steps(self) -> list[StepRecord]:
        """The scheduler's step records since the last call."""
        ...

    def shutdown(self) -> None: ...


class EngineSession(Protocol):
    """A streaming-input session: its turns share one engine request and its KV, which
    stays allocated between turns (the *preserve* strategy) until :meth:`close`."""

    def turn(self, token_ids: list[int], spec: SamplingSpec,
             extra_args: dict[str, Any] | None = None) -> AsyncIterator[TokenDelta]: ...

    async def close(self) -> None: ...


def engine_args_dict(config: ReplicaConfig) -> dict[str, Any]:
    """The ``AsyncEngineArgs`` keyword arguments for a replica config."""
    e = config.engine
    args: dict[str, Any] = {
        "model": str(config.resolved_model_path()),
        "served_model_name": config.model_name,
        "max_num_seqs": e.max_num_seqs,
        "enforce_eager": e.enforce_eager,
        "dtype": e.dtype,
        "seed": e.seed,
        "enable_prefix_caching": e.enable_prefix_caching,
        "scheduling_policy": "priority",
        "scheduler_cls": SCHEDULER_CLS,
        "kv_cache_memory_bytes": int(e.kv_cache_gib * (1 << 30)),
        "disable_log_stats": True,
    }
    for key in ("max_model_len", "max_num_batched_tokens", "block_size"):
        value = getattr(e, key)
        if value is not None:
            args[key] = value
    args.update(e.extra_args)
    return args


def validate_engine_args(args: dict[str, Any]) -> None:
    from vllm.engine.arg_utils import AsyncEngineArgs
    known = {f.name for f in dataclasses.fields(AsyncEngineArgs) if not f.name.startswith("_")}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown vLLM engine arguments: {unknown}")


def to_sampling_params(spec: SamplingSpec, extra_args: dict[str, Any] | None = None) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind
    return SamplingParams(
        max_tokens=spec.max_tokens, min_tokens=spec.min_tokens, temperature=spec.temperature,
        top_p=spec.top_p, top_k=spec.top_k, seed=spec.seed, stop=list(spec.stop) or None,
        stop_token_ids=list(spec.stop_token_ids) or None, ignore_eos=spec.ignore_eos,
        logit_bias=dict(spec.logit_bias) if spec.logit_bias else None,
        presence_penalty=spec.presence_penalty, frequency_penalty=spec.frequency_penalty,
        repetition_penalty=spec.repetition_penalty, skip_special_tokens=spec.skip_special_tokens,
        output_kind=RequestOutputKind.DELTA, extra_args=extra_args)


def to_delta(out: Any) -> TokenDelta:
    c = out.outputs[0]
    return TokenDelta(text=c.text, token_ids=list(c.token_ids), finish_reason=c.finish_reason,
                      stop_reason=c.stop_reason, num_prompt_tokens=len(out.prompt_token_ids or ()),
                      num_cached_tokens=out.num_cached_tokens or 0)


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """vLLM's per-request errors → EngineRequestError; a dead engine → EngineDeadError."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError as VllmDead
    try:
        yield
    except (VLLMClientError, ValueError, TypeError, OverflowError) as exc:
        raise EngineRequestError(str(exc)) from None
    except VllmDead as exc:
        raise EngineDeadError(str(exc)) from None


class VLLMEngine:
    """One vLLM ``AsyncLLM`` (V1 engine, priority scheduling) and its stats sink."""

    def __init__(self, config: ReplicaConfig) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_args_dict(config)
        validate_engine_args(args)
        # VLLM_CPU_KVCACHE_SPACE would override every replica's own KV size.
        if os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None) is not None:
            logger.info("ignoring VLLM_CPU_KVCACHE_SPACE: KV size comes from engine.kv_cache_gib")
        # Several CPU engines on one node must not pin their threads to the same cores.
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        self.stats_sink = EngineStatsSink()
        self._engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(**args), stat_loggers=[make_stat_logger_factory(self.stats_sink)])
        self._kv_bytes_per_token = self._compute_kv_bytes_per_token()
        self._process_ids = self._find_process_ids()
        self.max_model_len: int | None = int(self._engine.model_config.max_model_len)
        self.chunk_tokens: int | None = int(
            self._engine.vllm_config.scheduler_config.max_num_batched_tokens)
        logger.info("engine ready: %s", args)

    @property
    def raw(self) -> Any:
        """The underlying ``AsyncLLM`` (benchmarks call it directly)."""
        return self._engine

    def _compute_kv_bytes_per_token(self) -> int:
        mc = self._engine.model_config
        layers = mc.get_num_layers(self._engine.vllm_config.parallel_config)
        kv_heads = mc.get_num_kv_heads(self._engine.vllm_config.parallel_config)
        head = mc.get_head_size()
        elem = 4 if str(mc.dtype).endswith("float32") else 2
        return 2 * layers * kv_heads * head * elem

    def kv_bytes_per_token(self) -> int:
        return self._kv_bytes_per_token

    def process_ids(self) -> list[int]:
        """The pids of vLLM's engine-core processes (reported in the stats, so that
        operators and tests find them without scanning process titles); fixed for the
        engine's life (a dead engine means a replaced replica)."""
        return list(self._process_ids)

    def _find_process_ids(self) -> list[int]:
        resources = getattr(self._engine.engine_core, "resources", None)
        manager = getattr(resources, "engine_manager", None)
        return [p.pid for p in getattr(manager, "processes", ()) if p.pid]

    async def generate(self, request: ReplicaRequest,
                       extra_args: dict[str, Any] | None = None) -> AsyncIterator[TokenDelta]:
        with engine_errors():
            params = to_sampling_params(request.sampling, extra_args)
            stream = self._engine.generate({"prompt_token_ids": request.prompt_token_ids},
                                           params, request.request_id, priority=request.priority)
            async with contextlib.aclosing(stream):
                async for out in stream:
                    yield to_delta(out)

    @property
    def tokenizer(self) -> Any:
        return self._engine.get_tokenizer()

    def detokenize(self, token_ids: list[int]) -> str:
        return str(self._engine.get_tokenizer().decode(token_ids, skip_special_tokens=True))

    def tokenize(self, text: str) -> list[int]:
        return list(self._engine.get_tokenizer().encode(text, add_special_tokens=False))

    def open_session(self, request_id: str, priority: int = 0) -> VLLMSession:
        return VLLMSession(self._engine, request_id, priority)

    async def _scheduler_call(self, op: SchedulerOp) -> dict[str, Any]:
        """The engine-core utility call answered by ``AugserveScheduler.__call__``."""
        with engine_errors():
            return await self._engine.engine_core.call_utility_async("scheduler", op.to_wire())

    async def configure_scheduler(self, op: Configure) -> SchedulerState:
        return SchedulerState.from_wire(await self._scheduler_call(op))

    async def scheduler_state(self) -> SchedulerState:
        return SchedulerState.from_wire(await self._scheduler_call(GetState()))

    async def take_steps(self) -> list[StepRecord]:
        return steps_from_wire(await self._scheduler_call(TakeSteps()))

    async def abort(self, request_id: str) -> None:
        await self._engine.abort(request_id)

    async def check_health(self) -> None:
        if self._engine.errored:
            raise EngineDeadError("the vLLM engine has died")
        try:
            await self._engine.check_health()
        except Exception as exc:  # noqa: BLE001 - any failure here means a dead engine
            raise EngineDeadError(f"the vLLM engine has died: {exc}") from None

    @property
    def alive(self) -> bool:
        return not self._engine.errored

    def shutdown(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
            del engine
            gc.collect()


class VLLMSession:
    """:class:`EngineSession` on vLLM's streaming input (``StreamingInput`` chunks fed to one
    ``generate`` call).  A turn ends on its ``finish_reason`` while the request lives on in
    ``WAITING_FOR_STREAMING_REQ`` holding its KV; vLLM drops the turn's last sampled token
    from the context, so the caller sends it again at the start of the next chunk.
    Closing the output stream aborts the request, which frees its blocks."""

    def __init__(self, engine: Any, request_id: str, priority: int) -> None:
        self._engine = engine
        self.request_id = request_id
        self._priority = priority
        self._inputs: asyncio.Queue[Any] = asyncio.Queue()
        self._out: Any = None
        self.closed = False

    async def _input_stream(self) -> AsyncIterator[Any]:
        while (item := await self._inputs.get()) is not None:
            yield item

    async def turn(self, token_ids: list[int], spec: SamplingSpec,
                   extra_args: dict[str, Any] | None = None) -> AsyncIterator[TokenDelta]:
        from vllm.engine.protocol import StreamingInput
        assert not self.closed, "turn on a closed session"
        with engine_errors():
            params = to_sampling_params(spec, extra_args)
            # vLLM extends the first chunk's list in place: always hand over a copy.
            await self._inputs.put(StreamingInput({"prompt_token_ids": list(token_ids)}, params))
            if self._out is None:
                self._out = self._engine.generate(self._input_stream(), params, self.request_id,
                                                  priority=self._priority)
            while True:
                try:
                    out = await self._out.__anext__()
                except StopAsyncIteration:
                    self.closed = True
                    return
                delta = to_delta(out)
                turn_ended = delta.finish_reason is not None  # the caller may retag delta
                yield delta
                if turn_ended:
                    if out.finished:
                        self.closed = True
                    return

    async def close(self) -> None:
        """End the session and free its KV (idempotent)."""
        self.closed = True
        out, self._out = self._out, None
        if out is None:
            return
        try:
            await out.aclose()  # aborts the engine request, which frees its blocks
        except asyncio.CancelledError:
            # cancelled mid-close: make sure the paused request does not keep its KV
            await asyncio.shield(self._engine.abort(self.request_id))
            raise
