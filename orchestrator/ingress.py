"""The OpenAI-compatible ingress: FastAPI on Ray Serve.

validate → tokenize → admit to the global queue → stream from the assigned replica.
Tokens go replica → ingress → client; the queue manager only sees control messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

from orchestrator.config import AppConfig
from orchestrator.errors import (
    AugserveError,
    InternalError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    PayloadTooLargeError,
    QueueUnavailableError,
)
from orchestrator.metrics import IngressMetrics
from orchestrator.models import ServedModel
from orchestrator.openai_format import DONE, ResponseShape, finish_reason_of, sse, usage
from orchestrator.outcomes import Outcome
from orchestrator.prediction import length_query, make_client, observation
from orchestrator.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_request,
)
from orchestrator.queued import QueuedRequest
from orchestrator.request_builder import build_request, chat_prompt, completion_prompt
from orchestrator.streaming import RequestRun
from replicas.router import TARGET_KWARG
from replicas.types import TokenDelta

logger = logging.getLogger("ray.serve")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: How long a caller keeps re-attaching to a restarting queue manager before it gives up.
QUEUE_RECONNECT_S = 60.0
app = FastAPI(title="augserve", description="OpenAI-compatible API with SLO-aware queueing")


def error_response(error: AugserveError) -> JSONResponse:
    return JSONResponse(error.to_body(), status_code=error.status_code, headers=error.headers())


@app.exception_handler(AugserveError)
async def _augserve_error(_: Request, exc: AugserveError) -> JSONResponse:
    return error_response(exc)


@app.exception_handler(404)
async def _not_found(request: Request, _: Exception) -> JSONResponse:
    return error_response(NotFoundError(f"no route {request.method} {request.url.path}"))


@app.exception_handler(405)
async def _bad_method(request: Request, _: Exception) -> JSONResponse:
    err = InvalidRequestError(f"method {request.method} is not allowed on {request.url.path}",
                              code="method_not_allowed")
    err.status_code = 405
    return error_response(err)


def _chunk_extension(run: RequestRun, delta: TokenDelta) -> dict[str, Any]:
    """Per-chunk extension: the number of tokens; for augmented requests the turn, API
    call events, and on the last chunk the per-turn timings."""
    ext: dict[str, Any] = {"tokens": len(delta.token_ids)}
    if run.request.augmentation:
        ext["turn"] = delta.turn
        if delta.info and "api_call" in delta.info:
            ext["api_call"] = delta.info["api_call"]
        if delta.finish_reason is not None and run.trace.turns is not None:
            ext["turns"] = run.trace.turns
    if delta.finish_reason is not None and run.request.prediction is not None:
        ext["prediction"] = run.request.prediction.to_json()
    return ext


@serve.deployment(max_ongoing_requests=2048, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    def __init__(self, config: dict[str, Any], queue_manager: Any,
                 replicas: dict[str, Any], predictor: Any = None) -> None:
        self.config = AppConfig.model_validate(config)
        # By value over gRPC: about half the latency of the object-store path.
        self.qm = queue_manager.options(_by_reference=False)
        self.replicas = {name: h.options(_by_reference=False) for name, h in replicas.items()}
        self.models = {name: ServedModel.load(name, rs) for name, rs in self.config.models().items()}
        self.metrics = IngressMetrics()
        self._finished: list[tuple[str, str, bool | None]] = []
        self.predictor = make_client(self.config, predictor)
        self._max_api_names = self.config.predictor.server.max_api_names
        if self.predictor is not None:  # learn the address off the request path
            self._connecting = asyncio.get_running_loop().create_task(
                self.predictor.connect_forever())

    # ---- endpoints --------------------------------------------------------------------
    @app.get("/health")
    async def health(self) -> Response:
        try:
            snap = await asyncio.wait_for(self.qm.stats.remote(), timeout=5.0)
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"status": "unhealthy", "reason": f"queue manager: {exc}"}, 503)
        healthy = {m: sum(1 for r in snap["replicas"] if r["healthy"] and r["model"] == m)
                   for m in self.models}
        ok = all(healthy.values())
        return JSONResponse({"status": "ok" if ok else "unhealthy", "healthy_replicas": healthy,
                             "num_queued": snap["num_queued"],
                             "num_in_flight": snap["num_in_flight"]}, 200 if ok else 503)

    @app.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": "augserve",
             "max_model_len": m.max_model_len} for m in self.models.values()]}

    @app.get("/v1/admin/queue")
    async def queue_state(self) -> Response:
        try:
            return JSONResponse(await asyncio.wait_for(self.qm.stats.remote(), timeout=5.0))
        except Exception as exc:  # noqa: BLE001 - the queue manager is down or restarting
            return error_response(QueueUnavailableError(
                f"the queue manager is unavailable: {type(exc).__name__}", retry_after_s=2.0))

    @app.get("/v1/admin/slo_classes")
    async def slo_classes(self) -> dict[str, Any]:
        return {"slo_classes": {k: v.model_dump(mode="json")
                                for k, v in self.config.slo_classes.items()},
                "default_slo_class": self.config.queue.default_slo_class}

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    # ---- the request path -------------------------------------------------------------
    async def _read_json(self, request: Request) -> Any:
        limit = self.config.ingress.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidRequestError(f"the request body is not valid JSON: {exc}",
                                      code="invalid_json") from None

    async def _generate(self, http: Request, kind: str) -> Response:
        endpoint = "chat" if kind == "chat" else "completions"
        model_name = "unknown"
        try:
            body = await self._read_json(http)
            req = parse_request(ChatCompletionRequest if kind == "chat" else CompletionRequest, body)
            model = self.models.get(req.model)
            if model is None:
                raise ModelNotFoundError(f"model {req.model!r} is not served here; "
                                         f"served: {sorted(self.models)}", param="model")
            model_name = model.name
            prompt = chat_prompt(req, model) if kind == "chat" else completion_prompt(req, model)
            request_id = self._request_id(http, kind)
            built = build_request(req, prompt.ids, model, self.config, request_id)
            run = RequestRun(built.queued, built.replica, enqueue=self._enqueue,
                             open_stream=self._open_stream, release=self._release,
                             prompt_text=prompt.text)
            if self.predictor is not None:  # bounded by the client's deadline
                prediction = await self.predictor.predict(length_query(req, run, self._max_api_names))
                run.attach_prediction(prediction)
                self.metrics.predictions.inc(tags={
                    "model": model.name, "source": "fallback" if not prediction.length_model
                    else "predictor"})
            assignment = await run.admit()
        except AugserveError as exc:
            self.metrics.requests.inc(tags={"endpoint": endpoint, "model": model_name,
                                            "outcome": exc.admission_outcome().value})
            return error_response(exc)
        except Exception:  # noqa: BLE001 - the loop edge: never a bare 500 page
            logger.exception("unexpected error before streaming")
            self.metrics.requests.inc(tags={"endpoint": endpoint, "model": model_name,
                                            "outcome": Outcome.FAILED.value})
            return error_response(InternalError("internal error; the request was not run"))
        shape = ResponseShape(kind, request_id, model.name)
        headers = {"x-augserve-gpu-class": assignment.gpu_class}
        if "x-request-id" not in http.headers:  # else Serve's middleware echoes it
            headers["x-request-id"] = request_id
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        if req.stream:
            return StreamingResponse(self._sse(run, shape, include_usage, endpoint),
                                     media_type="text/event-stream", headers=headers)
        return await self._collect(run, shape, endpoint, headers)

    @staticmethod
    def _request_id(http: Request, kind: str) -> str:
        """The client's ``X-Request-Id`` (submission is idempotent: a repeat while it is in
        progress or recently finished gets 409), else a fresh id.  (Serve's HTTP proxy
        puts one on every request that has none, and returns it in the response.)"""
        given = http.headers.get("x-request-id")
        if given is None:
            return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        if not _REQUEST_ID.fullmatch(given):
            raise InvalidRequestError(
                "X-Request-Id: 1 to 128 characters of letters, digits and . _ : - are allowed",
                param="X-Request-Id")
        return given

    async def _enqueue(self, queued: QueuedRequest, retry: bool = False):
        """Admission by the queue manager.  When it dies (Serve restarts it, and it
        recovers its queue from Redis), the request re-attaches under its id: never
        queued twice, never lost; after ``QUEUE_RECONNECT_S`` the client gets 503."""
        deadline: float | None = None  # counted from the first failure
        resume, delay_s = False, 0.25
        while True:
            response = self.qm.enqueue.remote(queued, retry, resume)
            try:
                return await response
            except asyncio.CancelledError:
                response.cancel()
                self.qm.cancel.remote(queued.request_id)
                raise
            except AugserveError:
                raise
            except Exception as exc:  # noqa: BLE001 - the queue manager died or is restarting
                if deadline is None:
                    deadline = time.monotonic() + QUEUE_RECONNECT_S
                if time.monotonic() + delay_s > deadline:
                    logger.warning("queue manager unavailable: %s", exc)
                    raise QueueUnavailableError("the queue manager is unavailable; retry later",
                                                retry_after_s=2.0) from None
                logger.warning("request %s: queue manager unavailable (%s); re-attaching",
                               queued.request_id, type(exc).__name__)
                await asyncio.sleep(delay_s)
                resume, delay_s = True, min(2.0, delay_s * 2)

    def _open_stream(self, assignment, replica_request):
        handle = self.replicas[assignment.deployment]
        return handle.options(stream=True).generate.remote(
            replica_request, **{TARGET_KWARG: assignment.replica_id})

    def _release(self, request_id: str, outcome: Outcome, slo_met: bool | None = None) -> None:
        """Queue a completion notice; notices leave together every 5 ms (under load many
        requests finish close together: one RPC instead of many)."""
        self._finished.append((request_id, outcome.value, slo_met))
        if len(self._finished) == 1:
            asyncio.get_running_loop().call_later(0.005, self._flush_finished)

    def _flush_finished(self) -> None:
        batch, self._finished = self._finished, []
        if batch:
            self.qm.complete_many.remote(batch)

    async def _collect(self, run: RequestRun, shape: ResponseShape, endpoint: str,
                       headers: dict[str, str]) -> Response:
        parts: list[str] = []
        try:
            async with contextlib.aclosing(run.deltas()) as deltas:
                async for delta in deltas:
                    parts.append(delta.text)
        except AugserveError as exc:
            self._observe(run, endpoint)
            return error_response(exc)
        self._observe(run, endpoint)
        t = run.trace
        body = shape.full("".join(parts), finish_reason_of(t.finish_reason),
                          usage(t.num_prompt_tokens, t.num_output_tokens), self._extension(run))
        return JSONResponse(body, headers=headers)

    async def _sse(self, run: RequestRun, shape: ResponseShape, include_usage: bool,
                   endpoint: str):
        first = True
        try:
            async with contextlib.aclosing(run.deltas()) as deltas:
                async for delta in deltas:
                    if (not delta.text and not delta.token_ids and delta.finish_reason is None
                            and not first and not delta.info):
                        continue
                    yield sse(shape.chunk(delta.text, finish_reason_of(delta.finish_reason),
                                          first=first, extension=_chunk_extension(run, delta)))
                    first = False
            if include_usage:
                t = run.trace
                yield sse(shape.usage_chunk(usage(t.num_prompt_tokens, t.num_output_tokens)))
        except AugserveError as exc:
            yield sse(exc.to_body())
        finally:
            self._observe(run, endpoint)
        yield DONE

    def _extension(self, run: RequestRun) -> dict[str, Any]:
        t = run.trace
        a = t.assignment
        return {"replica_id": a.replica_id if a else None, "served_by": t.served_by,
                "deployment": a.deployment if a else None,
                "gpu_class": a.gpu_class if a else None,
                "queue_ms": round(a.queued_s * 1000, 3) if a else None,
                "attempts": t.attempts, **({"turns": t.turns} if t.turns is not None else {}),
                **({"prediction": run.request.prediction.to_json()}
                   if run.request.prediction is not None else {})}

    def _observe(self, run: RequestRun, endpoint: str) -> None:
        t = run.trace
        if self.predictor is not None:
            learned = observation(run)
            if learned is not None:
                self.predictor.observe(learned)  # buffered; sent in batches
        tags = {"model": run.request.model}
        outcome = t.outcome or Outcome.FAILED
        self.metrics.requests.inc(tags={**tags, "endpoint": endpoint, "outcome": outcome.value})
        if t.num_output_tokens:
            self.metrics.output_tokens.inc(t.num_output_tokens, tags=tags)
        if t.first_token_s is not None:
            self.metrics.ttft.observe(t.first_token_s - t.start_s, tags=tags)
        if outcome is Outcome.COMPLETED and t.end_s is not None:
            self.metrics.e2e.observe(t.end_s - t.start_s, tags=tags)

