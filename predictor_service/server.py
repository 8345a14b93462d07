"""The gRPC server: the ``Predictor`` service over :class:`PredictorCore`, the standard
health service and server reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from predictor_service.config import PredictorConfig
from predictor_service.core import PredictorCore, PredictorInputError, PredictorUnavailableError
from predictor_service.proto import predictor_pb2 as pb
from predictor_service.proto import predictor_pb2_grpc as pb_grpc
from predictor_service.types import NUM_BINS, BIN_WIDTH_TOKENS, LengthQuery, Observation, Prediction

logger = logging.getLogger("augserve.predictor")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Predictor"].full_name


def query_from_pb(m: pb.PredictRequest) -> LengthQuery:
    return LengthQuery(m.model, m.prompt_text, tuple(m.prompt_token_ids), m.prompt_tokens,
                       tuple(m.api_names), m.max_tokens)


def prediction_to_pb(p: Prediction) -> pb.PredictResponse:
    return pb.PredictResponse(
        output_tokens=p.output_tokens, output_tokens_p50=p.output_tokens_p50,
        output_tokens_p90=p.output_tokens_p90, bin_probs=p.bin_probs,
        api_durations=[pb.ApiDuration(name=d.name, mean_s=d.mean_s, p90_s=d.p90_s,
                                      samples=d.samples) for d in p.api_durations],
        predictor_version=p.predictor_version, fallback=p.fallback, length_model=p.length_model)


def observation_from_pb(m: pb.Observation) -> Observation:
    return Observation(m.model, m.prompt_text, tuple(m.prompt_token_ids), m.prompt_tokens,
                       tuple(m.output_tokens_per_turn),
                       tuple((c.name, c.duration_s) for c in m.api_calls))


class PredictorServicer(pb_grpc.PredictorServicer):
    def __init__(self, core: PredictorCore) -> None:
        self.core = core

    async def _predict(self, queries, context):
        try:
            return await self.core.predict(queries)
        except PredictorInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except PredictorUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:  # noqa: BLE001 - logged by the batch loop; callers fall back
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"prediction failed: {type(exc).__name__}: {exc}")

    async def Predict(self, request, context):
        (p,) = await self._predict([query_from_pb(request)], context)
        return prediction_to_pb(p)

    async def PredictBatch(self, request, context):
        if len(request.requests) > 4 * self.core.config.max_batch:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"requests: at most {4 * self.core.config.max_batch} per call")
        preds = await self._predict([query_from_pb(r) for r in request.requests], context)
        return pb.PredictBatchResponse(responses=[prediction_to_pb(p) for p in preds])

    async def Observe(self, request, context):
        try:
            accepted, rejected = self.core.observe(
                [observation_from_pb(o) for o in request.observations])
        except PredictorInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.ObserveResponse(accepted=accepted, rejected=rejected)

    async def Info(self, request, context):
        i = self.core.info()
        c = i["counters"]
        return pb.InfoResponse(
            length_model=i["length_model"],
            models=[pb.ModelInfo(**m) for m in i["models"]],
            api_durations=[pb.ApiDuration(name=d.name, mean_s=d.mean_s, p90_s=d.p90_s,
                                          samples=d.samples) for d in i["api_durations"]],
            persistence=i["persistence"], redis_connected=i["redis_connected"],
            embedding_model=i["embedding_model"], bins=NUM_BINS, bin_width_tokens=BIN_WIDTH_TOKENS,
            predictions_total=c.predictions, invalid_total=c.invalid,
            observations_total=c.observations, refits_total=c.refits,
            redis_errors_total=c.redis_errors, corrupt_entries_ignored=c.corrupt_snapshots)


class PredictorServer:
    """``await PredictorServer(config).start()``; ``.port`` is the bound port."""

    def __init__(self, config: PredictorConfig, core: PredictorCore | None = None) -> None:
        self.config = config
        self.core = core or PredictorCore(config)
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()

    async def start(self) -> PredictorServer:
        await self.core.start()
        server = grpc.aio.server()
        pb_grpc.add_PredictorServicer_to_server(PredictorServicer(self.core), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME), server)
        self.port = server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.host}:{self.config.port}")
        await server.start()
        self._server = server
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.warning("predictor: serving gRPC on %s:%d (length model %s, state in %s)",
                       self.config.host, self.port, self.core.model_cls.name, self.core.store.kind)
        return self

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first, then let calls in flight finish, then persist and close."""
        if self._server is None:
            return
        await self._health.enter_graceful_shutdown()
        await self._server.stop(self.config.grace_s if grace_s is None else grace_s)
        self._server = None
        await self.core.stop()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve_forever(config: PredictorConfig) -> None:
    """The standalone server: runs until SIGINT or SIGTERM, then shuts down gracefully."""
    server = await PredictorServer(config).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"predictor listening on {config.host}:{server.port}", flush=True)
    await stop.wait()
    logger.warning("predictor: shutting down")
    await server.stop()
