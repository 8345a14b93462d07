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

import grpc

from predictor_service.breaker import CircuitBreaker
from predictor_service.config import ClientConfig
from predictor_service.proto import predictor_pb2 as pb
from predictor_service.proto import predictor_pb2_grpc as pb_grpc
from predictor_service.types import ApiDurationPrediction, LengthQuery, Observation, Prediction

logger = logging.getLogger("augserve.predictor")
Resolve = Callable[[], Awaitable[str]]
#: What ``_call`` returns when the server refused the input (INVALID_ARGUMENT).
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


class PredictorClient:
    def __init__(self, config: ClientConfig | None = None, *, address: str | None = None,
                 resolve: Resolve | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or ClientConfig()
        self._address = address or self.config.address
        self._resolve = resolve
        self.breaker = CircuitBreaker(self.config.failure_threshold, self.config.open_s, clock)
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.PredictorStub | None = None
        self._pending: deque[pb.Observation] = deque(maxlen=self.config.max_pending_observations)
        self._flusher: asyncio.Task | None = None
        self._resolving: asyncio.Task | None = None
        self.num_fallbacks = 0
        self.num_observations_dropped = 0
        self.num_observations_sent = 0

    # ---- connection ---------------------------------------------------------------------
    @property
    def address(self) -> str | None:
        return self._address

    async def connect(self, timeout_s: float = 10.0) -> None:
        """Learn the address (off the hot path); calls before it answer the fallback."""
        if self._resolve is not None and not self._address:
            self._address = await asyncio.wait_for(self._resolve(), timeout_s)

    async def _re_resolve(self) -> None:
        try:
            self._address = await asyncio.wait_for(self._resolve(), 10.0)
        except Exception as exc:  # noqa: BLE001 - keep the old address; try at the next opening
            logger.warning("could not resolve the predictor's address: %s", exc)

    async def _ensure_stub(self) -> pb_grpc.PredictorStub:
        if self._stub is None:
            if not self._address:
                raise ConnectionError("no predictor address yet")
            self._channel = grpc.aio.insecure_channel(self._address)
            self._stub = pb_grpc.PredictorStub(self._channel)
        return self._stub

    async def _drop_channel(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(grace=None)

    async def close(self) -> None:
        for task in (self._flusher, self._resolving):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._flusher = self._resolving = None
        await self._drop_channel()

    # ---- calls --------------------------------------------------------------------------
    async def _call(self, make_call, deadline_s: float | None = None):
        """Run one RPC under the breaker and the deadline; None when it did not answer,
        ``_REFUSED`` when it refused the input."""
        if not self.breaker.allow():
            return None
        probe = self.breaker.probing
        deadline_s = deadline_s or self.config.deadline_ms / 1000.0
        try:
            async with asyncio.timeout(deadline_s):
                stub = await self._ensure_stub()
                result = await make_call(stub, deadline_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                self.breaker.success()  # the server is fine; the input was not
                logger.warning("predictor refused the input: %s", exc.details())
                return _REFUSED
            return await self._failed(exc)
        except (TimeoutError, ConnectionError, OSError) as exc:
            return await self._failed(exc)
        except asyncio.CancelledError:
            if probe:  # else the circuit would stay half-open with no probe ever again
                self.breaker.release()
            raise
        self.breaker.success()
        return result

    async def _failed(self, exc: BaseException):
        times_opened = self.breaker.times_opened
        self.breaker.failure()
        if self.breaker.times_opened > times_opened:  # opened, or re-opened by a failed probe
            logger.warning("predictor unreachable (%s): circuit open for %.1f s",
                           type(exc).__name__, self.config.open_s)
            await self._drop_channel()
            # A restarted server may listen elsewhere (one resolution at a time).
            if self._resolve is not None and (self._resolving is None or self._resolving.done()):
                self._resolving = asyncio.get_running_loop().create_task(self._re_resolve())
        return None

    async def predict(self, query: LengthQuery) -> Prediction:
        try:
            request = query_to_pb(query)
        except (ValueError, TypeError) as exc:  # e.g. an id out of int32 range
            logger.warning("predictor query cannot be sent (%s): fallback", exc)
            reply = None
        else:
            reply = await self._call(lambda stub, t: stub.Predict(request, timeout=t))
        if reply is None or reply is _REFUSED:
            self.num_fallbacks += 1
            return fallback_prediction(self.config, query)
        return prediction_from_pb(reply)

    async def predict_batch(self, queries: list[LengthQuery]) -> list[Prediction]:
        try:
            request = pb.PredictBatchRequest(requests=[query_to_pb(q) for q in queries])
        except (ValueError, TypeError) as exc:
            logger.warning("predictor queries cannot be sent (%s): fallback", exc)
            reply = None
        else:
            reply = await self._call(lambda stub, t: stub.PredictBatch(request, timeout=t))
        if reply is None or reply is _REFUSED:
            self.num_fallbacks += len(queries)
            return [fallback_prediction(self.config, q) for q in queries]
        return [prediction_from_pb(r) for r in reply.responses]

    # ---- observations, off the hot path -------------------------------------------------
    def observe(self, observation: Observation) -> None:
        try:  # converted now: one unsendable observation must not block the others
            message = observation_to_pb(observation)
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
        """Send what is buffered now; False when the predictor did not take it."""
        while self._pending:
            batch = [self._pending[i] for i in range(min(self.config.observe_batch,
                                                         len(self._pending)))]
            request = pb.ObserveRequest(observations=batch)
            # Observations are not latency-critical: a longer deadline than predictions.
            reply = await self._call(lambda stub, t: stub.Observe(request, timeout=t),
                                     OBSERVE_DEADLINE_S)
            if reply is None:
                return False  # kept for the next attempt
            # Pop what was sent, not len(batch): observe() may have dropped part of the
            # batch (the oldest) to make room while the call was in flight.
            sent = {id(o) for o in batch}
            while self._pending and id(self._pending[0]) in sent:
                self._pending.popleft()
            if reply is not _REFUSED:
                self.num_observations_sent += len(batch)
        return True

    async def _flush_loop(self) -> None:
        while self._pending:
            await asyncio.sleep(self.config.observe_interval_s)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - never let the flusher die silently
                logger.exception("sending observations failed")
