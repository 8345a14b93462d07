"""The client against a real in-process gRPC server that answers too slowly: many
concurrent predictions all get the fallback (none raises, none waits past the deadline),
and what the client sends stays small whatever the prompt."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from predictor_service.client import PredictorClient
from predictor_service.config import ClientConfig
from predictor_service.proto import predictor_pb2 as pb
from predictor_service.proto import predictor_pb2_grpc as pb_grpc
from predictor_service.types import LengthQuery, Observation


class SlowPredictor(pb_grpc.PredictorServicer):
    def __init__(self) -> None:
        self.delay_s = 0.2
        self.observed: list[pb.ObserveRequest] = []
        self.nan = False
        self.max_observe = 1 << 20

    async def Predict(self, request, context):
        await asyncio.sleep(self.delay_s)
        value = float("nan") if self.nan else 7.0
        return pb.PredictResponse(output_tokens=value, output_tokens_p50=7, output_tokens_p90=9,
                                  length_model="slow", predictor_version=1)

    async def Observe(self, request, context):
        if len(request.observations) > self.max_observe:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "message too large")
        self.observed.append(request)
        return pb.ObserveResponse(accepted=len(request.observations))


@pytest.fixture
async def slow_server():
    server = grpc.aio.server()
    servicer = SlowPredictor()
    pb_grpc.add_PredictorServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(None)


async def test_concurrent_predictions_against_a_slow_server_all_fall_back(slow_server):
    servicer, address = slow_server
    client = PredictorClient(ClientConfig(deadline_ms=20, failure_threshold=5), address=address)
    query = LengthQuery("m", "hi", prompt_tokens=1, max_tokens=50)
    try:
        async def one(i: int):
            await asyncio.sleep(0.002 * i)
            t0 = time.perf_counter()
            answer = await client.predict(query)
            return answer, time.perf_counter() - t0
        results = await asyncio.gather(*(one(i) for i in range(30)))  # none may raise
        assert all(a.fallback and a.length_model == "" for a, _ in results)
        assert max(t for _, t in results) < 0.2  # the deadline, not the server's 200 ms
        assert client.breaker.state == "open"
        servicer.delay_s = 0.0
        servicer.nan = True  # a non-finite answer is not passed on either
        client.breaker.success()
        assert (await client.predict(query)).fallback
        servicer.nan = False
        assert (await client.predict(query)).length_model == "slow"
    finally:
        await client.close()


async def test_observations_are_cut_before_sending(slow_server):
    servicer, address = slow_server
    client = PredictorClient(ClientConfig(max_prompt_chars=1000), address=address)
    try:
        client.observe(Observation("m", "x" * 1_000_000, (), 250_000, (5,)))
        client.observe(Observation("m", "", tuple(range(100_000)), 100_000, (5,)))
        assert await client.flush()
        (request,) = servicer.observed
        text, ids = request.observations
        assert len(text.prompt_text) <= 1003 and text.prompt_tokens == 250_000
        assert len(ids.prompt_token_ids) == 1000 and ids.prompt_token_ids[-1] == 99_999
        assert client.num_observations_sent == 2
    finally:
        await client.close()


async def test_a_batch_refused_as_too_large_is_halved_until_it_goes(slow_server):
    servicer, address = slow_server
    servicer.max_observe = 2
    client = PredictorClient(ClientConfig(observe_batch=8), address=address)
    try:
        for i in range(5):
            client.observe(Observation("m", f"p{i}", (), 1, (i + 1,)))
        assert await client.flush()
        sizes = [len(r.observations) for r in servicer.observed]
        assert sizes == [2, 2, 1] and client.num_observations_sent == 5
        assert client.num_observations_rejected == 0
    finally:
        await client.close()
