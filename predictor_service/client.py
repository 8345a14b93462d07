"""The async predictor client used on the serving path.

``predict`` never raises and never waits longer than ``deadline_ms``: when the server is
slow, down, unknown or the circuit is open it returns the *fallback*, flagged
``fallback=True``: ``fallback_output_tokens`` as the point estimate and median,
``fallback_output_tokens_p90`` as the 90th percentile (both capped by the query's
``max_tokens``), no bin probabilities, version 0, and for every API name the fallback
duration mean and p90.  ``observe`` only buffers; a background task sends batches of
``observe_batch`` every ``observe_interval_s`` (oldest dropped beyond
``max_pending_observations``).

The address comes from ``address`` or from an async ``resolve`` callable (asked again
when the circuit opens, so a restarted server on a new port is found)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from predictor_service.breaker import CircuitBreaker
from predictor_service.config import ClientConfig
from predictor_service.features import prompt_text
from predictor_service.proto import predictor_pb2 as pb
from predictor_service.proto import predictor_pb2_grpc as pb_grpc
from predictor_service.types import ApiDurationPrediction, LengthQuery, Observation, Prediction

logger = logging.getLogger("augserve.predictor")
Resolve = Callable[[], Awaitable[str]]
#: What ``_call`` returns when the server refused the input (INVALID_ARGUMENT, or a
#: message over its size limit).
_REFUSED = object()
OBSERVE_DEADLINE_S = 2.0


def fallback_prediction(config: ClientConfig, q: LengthQuery) -> Prediction:
    cap = float(q.max_tokens) if q.max_tokens > 0 else math.inf
    return Prediction(
        output_tokens=min(config.fallback_output_tokens, cap),
        output_tokens_p50=min(config.fallback_output_tokens, cap),
        output_tokens_p90=min(config.fallback_output_tokens_p90, cap),
        api_durations=tuple(ApiDurationPrediction(n, config.fallback_api_duration_s,
                                                  config.fallback_api_duration_p90_s)
                            for n in q.api_names),
        fallback=True)


def query_to_pb(q: LengthQuery) -> pb.PredictRequest:
    return pb.PredictRequest(model=q.model, prompt_text=q.prompt_text,
                             prompt_token_ids=q.prompt_token_ids, prompt_tokens=q.prompt_tokens,
                             api_names=q.api_names, max_tokens=q.max_tokens)


def prediction_from_pb(m: pb.PredictResponse) -> Prediction:
    return Prediction(m.output_tokens, m.output_tokens_p50, m.output_tokens_p90,
                      tuple(m.bin_probs),
                      tuple(ApiDurationPrediction(d.name, d.mean_s, d.p90_s, d.samples)
                            for d in m.api_durations),
                      m.predictor_version, m.fallback, m.length_model)


def observation_to_pb(o: Observation) -> pb.Observation:
    return pb.Observation(model=o.model, prompt_text=o.prompt_text,
                          prompt_token_ids=o.prompt_token_ids, prompt_tokens=o.prompt_tokens,
                          output_tokens_per_turn=o.output_tokens_per_turn,
                          api_calls=[pb.ApiCall(name=n, duration_s=d) for n, d in o.api_calls])


def resolver(handle: Any) -> Resolve:
    """The address of the predictor behind a Serve deployment handle (the ``Predictor``
    deployment answers ``address()``), as the ``resolve`` callable of the client."""
    async def resolve() -> str:
        return await asyncio.wait_for(handle.address.remote(), timeout=10.0)
    return resolve


def _bounded(text: str, ids: tuple[int, ...], max_chars: int) -> tuple[str, tuple[int, ...]]:
    """What the server would use anyway: the text cut as it cuts it, at most ``max_chars``
    token ids (first and last halves).  Keeps messages far below gRPC's 4 MB limit."""
    if len(ids) > max_chars:
        ids = ids[:max_chars // 2] + ids[-(max_chars // 2):]
    return prompt_text(text, (), max_chars) if text else "", ids


def _finite(m: pb.PredictResponse) -> bool:
    return all(math.isfinite(v) for v in (m.output_tokens, m.output_tokens_p50, m.output_tokens_p90)) \
        and all(math.isfinite(d.mean_s) and math.isfinite(d.p90_s) for d in m.api_durations)


class PredictorClient:
    def __init__(self, config: ClientConfig | None = None, *, address: str | None = None,
                 resolve: Resolve | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or ClientConfig()
        self._address = address or self.config.address
        self._resolve = resolve
        c = self.config
        self.breaker = CircuitBreaker(c.failure_threshold, c.open_s, clock)
        # Observations have their own circuit: a slow Observe must not open predictions'.
        self.observe_breaker = CircuitBreaker(c.failure_threshold, c.open_s, clock)
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.PredictorStub | None = None
        self._pending: deque[pb.Observation] = deque(maxlen=c.max_pending_observations)
        self._flusher: asyncio.Task | None = None
        self._resolving: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        self.num_fallbacks = 0
        self.num_observations_dropped = 0
        self.num_observations_sent = 0
        self.num_observations_rejected = 0

    # ---- connection ---------------------------------------------------------------------
    @property
    def address(self) -> str | None:
        return self._address

    async def connect(self, timeout_s: float = 10.0) -> None:
        """Learn the address (off the hot path); calls before it answer the fallback."""
        if self._resolve is not None and not self._address:
            self._set_address(await asyncio.wait_for(self._resolve(), timeout_s))

    async def connect_forever(self, retry_s: float = 2.0) -> None:
        """:meth:`connect`, retried until it succeeds (for a background task)."""
        while True:
            try:
                await self.connect(timeout_s=30.0)
                return
            except Exception as exc:  # noqa: BLE001 - predictions fall back meanwhile
                logger.warning("predictor not reachable yet: %s", exc)
                await asyncio.sleep(retry_s)

    def _set_address(self, address: str | None, force: bool = False) -> None:
        """A new address (or ``force``) gets a new channel; calls on the old one finish
        undisturbed (it is closed with a grace period, never under their feet).  Forced
        when the circuit opens: an old channel may sit in gRPC's reconnect backoff (up to
        two minutes) long after the server is back."""
        if address == self._address and self._stub is not None and not force:
            return
        old, self._channel, self._stub = self._channel, None, None
        self._address = address
        if old is not None:
            task = asyncio.get_running_loop().create_task(old.close(grace=OBSERVE_DEADLINE_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _re_resolve(self) -> None:
        if self._resolve is None:
            return
        try:
            self._set_address(await asyncio.wait_for(self._resolve(), 10.0))
        except Exception as exc:  # noqa: BLE001 - keep the old address; try at the next opening
            logger.warning("could not resolve the predictor's address: %s", exc)

    def _ensure_stub(self) -> pb_grpc.PredictorStub:
        if self._stub is None:
            if not self._address:
                raise ConnectionError("no predictor address yet")
            self._channel = grpc.aio.insecure_channel(self._address)
            self._stub = pb_grpc.PredictorStub(self._channel)
        return self._stub

    async def close(self) -> None:
        for task in (self._flusher, self._resolving):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._flusher = self._resolving = None
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(grace=None)
        await asyncio.gather(*self._closing, return_exceptions=True)

    # ---- calls --------------------------------------------------------------------------
    async def _call(self, make_call, breaker: CircuitBreaker, deadline_s: float):
        """Run one RPC under ``breaker`` and the deadline.  Returns the reply, None when
        the server did not answer, ``_REFUSED`` when it refused the input.  Raises only
        when the calling task itself is being cancelled."""
        if not breaker.allow():
            return None
        probe = breaker.probing
        try:
            async with asyncio.timeout(deadline_s):
                result = await make_call(self._ensure_stub(), deadline_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
                breaker.success()  # the server is fine; the input was not
                logger.warning("predictor refused the input: %s", exc.details())
                return _REFUSED
            return self._failed(exc, breaker)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                if probe:  # else the circuit would stay half-open with no probe ever again
                    breaker.release()
                raise
            return self._failed(exc, breaker)  # the RPC was cancelled, not its caller
        except Exception as exc:  # noqa: BLE001 - advisory service: any failure → fallback
            return self._failed(exc, breaker)
        breaker.success()
        return result

    def _failed(self, exc: BaseException, breaker: CircuitBreaker):
        times_opened = breaker.times_opened
        breaker.failure()
        if breaker.times_opened > times_opened:  # opened, or re-opened by a failed probe
            logger.warning("predictor unreachable (%s): circuit open for %.1f s",
                           type(exc).__name__, self.config.open_s)
            self._set_address(self._address, force=True)
            # A restarted server may listen elsewhere (one resolution at a time).
            if self._resolve is not None and (self._resolving is None or self._resolving.done()):
                self._resolving = asyncio.get_running_loop().create_task(self._re_resolve())
        return None

    def _query(self, q: LengthQuery) -> pb.PredictRequest:
        text, ids = _bounded(q.prompt_text, q.prompt_token_ids, self.config.max_prompt_chars)
        return query_to_pb(LengthQuery(q.model, text, ids, q.prompt_tokens, q.api_names, q.max_tokens))

    async def predict(self, query: LengthQuery) -> Prediction:
        async def call(stub, requests, t):
            return [await stub.Predict(requests[0], timeout=t)]
        (answer,) = await self._predict([query], call)
        return answer

    async def predict_batch(self, queries: list[LengthQuery]) -> list[Prediction]:
        async def call(stub, requests, t):
            reply = await stub.PredictBatch(pb.PredictBatchRequest(requests=requests), timeout=t)
            return list(reply.responses)
        return await self._predict(queries, call)

    async def _predict(self, queries: list[LengthQuery], call) -> list[Prediction]:
        """The answers of ``call`` (a list of responses), or the fallback for all."""
        try:
            requests = [self._query(q) for q in queries]
        except (ValueError, TypeError) as exc:  # e.g. an id out of int32 range
            logger.warning("predictor query cannot be sent (%s): fallback", exc)
            replies = None
        else:
            replies = await self._call(lambda stub, t: call(stub, requests, t), self.breaker,
                                       self.config.deadline_ms / 1000.0)
        if (replies is None or replies is _REFUSED or len(replies) != len(queries)
                or not all(_finite(r) for r in replies)):
            self.num_fallbacks += len(queries)
            return [fallback_prediction(self.config, q) for q in queries]
        return [prediction_from_pb(r) for r in replies]

    # ---- observations, off the hot path -------------------------------------------------
    def observe(self, observation: Observation) -> None:
        o = observation
        text, ids = _bounded(o.prompt_text, o.prompt_token_ids, self.config.max_prompt_chars)
        try:  # converted now: one unsendable observation must not block the others
            message = observation_to_pb(Observation(o.model, text, ids, o.prompt_tokens,
                                                    o.output_tokens_per_turn, o.api_calls))
        except (ValueError, TypeError) as exc:
            logger.warning("observation cannot be sent (%s): dropped", exc)
            self.num_observations_dropped += 1
            return
        if len(self._pending) == self._pending.maxlen:
            self.num_observations_dropped += 1
        self._pending.append(message)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def flush(self) -> bool:
        """Send what is buffered now; False when the predictor did not take it.  A batch
        the server refuses as a whole (too large a message, too many in one call) is
        halved and sent again; a single refused observation is dropped."""
        size = self.config.observe_batch
        while self._pending:
            batch = [self._pending[i] for i in range(min(size, len(self._pending)))]
            request = pb.ObserveRequest(observations=batch)
            # Observations are not latency-critical: a longer deadline than predictions.
            reply = await self._call(lambda stub, t: stub.Observe(request, timeout=t),
                                     self.observe_breaker, OBSERVE_DEADLINE_S)
            if reply is None:
                return False  # kept for the next attempt
            if reply is _REFUSED and len(batch) > 1:
                size = len(batch) // 2
                continue
            # Pop what was sent, not len(batch): observe() may have dropped part of the
            # batch (the oldest) to make room while the call was in flight.
            sent = {id(o) for o in batch}
            while self._pending and id(self._pending[0]) in sent:
                self._pending.popleft()
            if reply is _REFUSED:  # refused as a whole: dropped, never retried forever
                self.num_observations_rejected += len(batch)
            else:
                self.num_observations_sent += reply.accepted
                if reply.rejected:
                    self.num_observations_rejected += len(reply.rejected)
                    logger.warning("predictor rejected %d observations, e.g. %s",
                                   len(reply.rejected), reply.rejected[0])
        return True

    async def _flush_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(self.config.observe_interval_s)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - never let the flusher die silently
                logger.exception("sending observations failed")
