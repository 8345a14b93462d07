"""One request's trip after admission: queue → assigned replica → deltas, with the
bookkeeping that must happen whatever the outcome (queue release, engine abort, metrics).

Transport is injected (``enqueue``, ``open_stream``, ``release``), so unit tests drive it
with fakes and the ingress with Serve handles."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.dispatcher import Assignment
from orchestrator.errors import (
    AugserveError,
    InvalidRequestError,
    ReplicaFailedError,
    ToolCallFailedError,
)
from orchestrator.outcomes import Outcome
from orchestrator.queued import QueuedRequest
from predictor_service.types import Prediction
from replicas.engine import EngineRequestError
from replicas.tools import ToolError
from replicas.types import ReplicaRequest, RequestEvictedError, TokenDelta

logger = logging.getLogger("ray.serve")

Enqueue = Callable[[QueuedRequest, bool], Awaitable[Assignment]]  # (request, retry)
OpenStream = Callable[[Assignment, ReplicaRequest], Any]  # -> async-iterable with .cancel()
Release = Callable[[str, Outcome, bool | None], None]  # (id, outcome, SLO met)


@dataclass
class RequestTrace:
    """What happened to one request (timings in seconds since the ingress got it)."""

    start_s: float = field(default_factory=time.perf_counter)
    assignment: Assignment | None = None
    first_token_s: float | None = None
    end_s: float | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0
    finish_reason: str | None = None
    outcome: Outcome | None = None
    attempts: int = 0
    #: Times the queue manager took it back from a replica that had not started it.
    evictions: int = 0
    #: The replica that said it produced the tokens (its own id, from the stream).
    served_by: str | None = None
    #: Augmented requests: per-turn timings reported by the replica (turn 0 gets the
    #: global queue time added as ``queue_s``).
    turns: list[dict[str, Any]] | None = None


class RequestRun:
    """Runs one admitted request; iterate :meth:`deltas` exactly once."""

    def __init__(self, queued: QueuedRequest, replica_request: ReplicaRequest, *,
                 enqueue: Enqueue, open_stream: OpenStream, release: Release,
                 max_attempts: int = 2, prompt_text: str = "") -> None:
        self.queued = queued
        self.request = replica_request
        #: The prompt as the client sent it in text ("" for token ids): the predictor's input.
        self.prompt_text = prompt_text
        self._enqueue = enqueue
        self._open_stream = open_stream
        self._release = release
        self._max_attempts = max_attempts
        self.trace = RequestTrace(num_prompt_tokens=len(replica_request.prompt_token_ids))

    def attach_prediction(self, prediction: Prediction) -> None:
        """The prediction travels in the header both views share."""
        header = dataclasses.replace(self.request.header, prediction=prediction)
        self.queued.header = header
        self.request = dataclasses.replace(self.request, header=header)

    async def admit(self, retry: bool = False) -> Assignment:
        """Wait for an assignment (typed rejection errors propagate to the caller)."""
        self.trace.attempts += 1
        self.trace.assignment = await self._enqueue(self.queued, retry)
        return self.trace.assignment

    async def deltas(self) -> AsyncGenerator[TokenDelta, None]:
        """Stream the deltas; retries on another replica if one fails before any token."""
        assert self.trace.assignment is not None, "admit() first"
        outcome = Outcome.FAILED
        try:
            while True:
                stream = self._open_stream(self.trace.assignment, self.request)
                try:
                    async for delta in stream:
                        self._account(delta)
                        yield delta
                    outcome = Outcome.COMPLETED
                    return
                except (asyncio.CancelledError, GeneratorExit):
                    outcome = Outcome.CANCELLED
                    _cancel(stream)
                    raise
                except RequestEvictedError:
                    _cancel(stream)
                    if self.trace.num_output_tokens:  # a replica evicts only unstarted ones
                        raise ReplicaFailedError("the request was evicted after it started",
                                                 retry_after_s=1.0) from None
                    logger.info("request %s: evicted from replica %s; re-queueing",
                                self.request.request_id, self.trace.assignment.replica_id)
                    self.queued.evicted = True
                    self.queued.avoid_replica = self.trace.assignment.replica_id
                    self.trace.evictions += 1
                    await self.admit(retry=True)
                except EngineRequestError as exc:
                    outcome = Outcome.REJECTED_INVALID
                    raise InvalidRequestError(str(exc)) from None
                except ToolError as exc:
                    _cancel(stream)
                    if exc.status == 400:
                        raise InvalidRequestError(str(exc), code=exc.code) from None
                    raise ToolCallFailedError(str(exc)) from None
                except AugserveError:
                    _cancel(stream)
                    raise
                except Exception as exc:  # noqa: BLE001 - replica/transport failure
                    _cancel(stream)
                    if (self.trace.num_output_tokens
                            or self.trace.attempts - self.trace.evictions >= self._max_attempts):
                        raise ReplicaFailedError(
                            f"the replica serving this request failed: {type(exc).__name__}",
                            retry_after_s=1.0) from None
                    logger.warning("request %s: replica %s failed before its first token "
                                   "(%s); re-queueing", self.request.request_id,
                                   self.trace.assignment.replica_id, exc)
                    self.queued.avoid_replica = self.trace.assignment.replica_id
                    await self.admit(retry=True)  # releases the failed assignment too
        finally:
            self.trace.end_s = time.perf_counter()
            self.trace.outcome = outcome
            self._release(self.request.request_id, outcome, self.slo_met())

    def slo_met(self) -> bool | None:
        """Whether the finished request met its SLO (None: no SLO, or the client left)."""
        slo, t = self.queued.slo, self.trace
        if slo is None or t.outcome is Outcome.CANCELLED:
            return None
        if t.outcome is not Outcome.COMPLETED or t.end_s is None:
            return False
        ttft_ok = slo.ttft_ms is None or (
            t.first_token_s is not None and (t.first_token_s - t.start_s) * 1000 <= slo.ttft_ms)
        return ttft_ok and (slo.e2e_ms is None or (t.end_s - t.start_s) * 1000 <= slo.e2e_ms)

    def _account(self, delta: TokenDelta) -> None:
        if delta.token_ids and self.trace.first_token_s is None:
            self.trace.first_token_s = time.perf_counter()
        self.trace.num_output_tokens += len(delta.token_ids)
        if delta.num_prompt_tokens:
            self.trace.num_prompt_tokens = delta.num_prompt_tokens
        if delta.served_by is not None:
            self.trace.served_by = delta.served_by
        if delta.finish_reason is not None:
            self.trace.finish_reason = delta.finish_reason
        if delta.info and "turns" in delta.info:
            turns = [dict(t) for t in delta.info["turns"]]
            if turns and self.trace.assignment is not None:
                turns[0]["queue_s"] = self.trace.assignment.queued_s
            self.trace.turns = turns


def _cancel(stream: Any) -> None:
    cancel = getattr(stream, "cancel", None)
    if cancel is not None:
        try:
            cancel()
        except Exception:  # noqa: BLE001 - best effort on an already-broken stream
            logger.debug("cancel failed", exc_info=True)
