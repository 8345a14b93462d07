"""The circuit breaker on a fake clock, and the client's fallback without a server (a
closed local port, no address at all, or a fake stub standing in for the server)."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from predictor_service.breaker import CircuitBreaker
from predictor_service.client import PredictorClient
from predictor_service.config import ClientConfig
from predictor_service.proto import predictor_pb2 as pb
from predictor_service.types import LengthQuery, Observation
from tests.unit.fakes import FakeClock

QUERY = LengthQuery("m", "write a haiku", api_names=("search", "calc"))


# ---- breaker -----------------------------------------------------------------------------
def test_breaker_opens_after_consecutive_failures():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=3, open_s=5.0, clock=clock)
    assert b.state == "closed" and b.allow()
    b.failure()
    b.failure()
    b.success()  # not consecutive: the count starts again
    b.failure()
    b.failure()
    assert b.state == "closed" and b.allow() and b.times_opened == 0
    b.failure()
    assert b.state == "open" and not b.allow() and b.times_opened == 1
    clock.advance(4.9)
    assert b.state == "open" and not b.allow()


def test_breaker_half_open_lets_one_probe_and_success_closes():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=2, open_s=5.0, clock=clock)
    b.failure()
    b.failure()
    clock.advance(5.0)
    assert b.state == "half-open"
    assert b.allow()  # the probe
    assert not b.allow() and not b.allow()  # nothing else while it is out
    b.success()
    assert b.state == "closed" and b.failures == 0
    assert all(b.allow() for _ in range(3))
    assert b.times_opened == 1
    b.failure()  # a fresh count: one failure does not open again
    assert b.state == "closed"


def test_breaker_failed_probe_reopens():
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, open_s=2.0, clock=clock)
    b.failure()
    assert b.times_opened == 1
    clock.advance(2.5)
    assert b.allow()
    b.failure()
    assert b.state == "open" and b.times_opened == 2
    clock.advance(1.9)  # open_s counts from the re-opening
    assert b.state == "open" and not b.allow()
    clock.advance(0.1)
    assert b.state == "half-open" and b.allow() and not b.allow()
    b.release()  # the probe was cancelled: another may go
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.times_opened == 2


# ---- client helpers ----------------------------------------------------------------------
@pytest.fixture
def closed_port_address() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


class FakeStub:
    """Stands in for the gRPC stub: answers, refuses, or blocks until released."""

    def __init__(self, response: pb.PredictResponse | None = None) -> None:
        self.response = response or pb.PredictResponse(
            output_tokens=42.0, output_tokens_p50=42.0, output_tokens_p90=99.0,
            predictor_version=3, length_model="hashed-linear")
        self.refuse = False
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.predict_calls = 0
        self.observed: list[list[str]] = []

    async def _wait(self) -> None:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse:
            raise grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(),
                                       grpc.aio.Metadata(), details="prompt is empty")

    async def Predict(self, request, timeout=None):
        self.predict_calls += 1
        await self._wait()
        return self.response

    async def Observe(self, request, timeout=None):
        self.observed.append([o.prompt_text for o in request.observations])
        await self._wait()
        return pb.ObserveResponse(accepted=len(request.observations))


def obs(text: str) -> Observation:
    return Observation("m", text, output_tokens_per_turn=(5,))


def assert_fallback(p, config: ClientConfig, max_tokens: int = 0) -> None:
    cap = max_tokens if max_tokens > 0 else float("inf")
    assert p.fallback is True and p.predictor_version == 0 and p.bin_probs == ()
    assert p.output_tokens == p.output_tokens_p50 == min(config.fallback_output_tokens, cap)
    assert p.output_tokens_p90 == min(config.fallback_output_tokens_p90, cap)


# ---- client: fallback --------------------------------------------------------------------
async def test_fallback_values_against_a_closed_port(closed_port_address):
    config = ClientConfig(failure_threshold=10, fallback_output_tokens=100.0,
                          fallback_output_tokens_p90=400.0, fallback_api_duration_s=2.0,
                          fallback_api_duration_p90_s=6.0, deadline_ms=2000.0)
    client = PredictorClient(config, address=closed_port_address)
    try:
        p = await client.predict(QUERY)
        assert_fallback(p, config)
        assert (p.output_tokens, p.output_tokens_p90) == (100.0, 400.0)
        assert [(d.name, d.mean_s, d.p90_s, d.samples) for d in p.api_durations] == [
            ("search", 2.0, 6.0, 0), ("calc", 2.0, 6.0, 0)]
        for max_tokens, want in ((50, (50, 50)), (200, (100, 200)), (1000, (100, 400))):
            p = await client.predict(LengthQuery("m", "hi", max_tokens=max_tokens))
            assert_fallback(p, config, max_tokens)
            assert (p.output_tokens, p.output_tokens_p90) == want
        # a negative max_tokens is no cap (as in LengthDistribution.capped), never negative
        p = await client.predict(LengthQuery("m", "hi", max_tokens=-5))
        assert (p.output_tokens, p.output_tokens_p90) == (100.0, 400.0)
        batch = await client.predict_batch([QUERY, LengthQuery("m", "x", max_tokens=30)])
        assert [b.output_tokens for b in batch] == [100.0, 30.0]
        assert all(b.fallback for b in batch)
        assert client.num_fallbacks == 7
        assert client.breaker.failures == 6 and client.breaker.state == "closed"
    finally:
        await client.close()


async def test_unsendable_query_gets_the_fallback():
    client = PredictorClient(ClientConfig(), address="127.0.0.1:1")
    stub = client._stub = FakeStub()
    try:
        huge = LengthQuery("m", "hi", prompt_token_ids=(2**40,))
        assert_fallback(await client.predict(huge), client.config)
        assert all(p.fallback for p in await client.predict_batch([QUERY, huge]))
        assert stub.predict_calls == 0 and client.breaker.failures == 0
    finally:
        await client.close()


async def test_open_circuit_skips_the_call_until_a_probe(closed_port_address, monkeypatch):
    clock = FakeClock()
    config = ClientConfig(failure_threshold=3, open_s=5.0, deadline_ms=2000.0)
    client = PredictorClient(config, address=closed_port_address, clock=clock)
    try:
        for i in range(3):
            assert (await client.predict(QUERY)).fallback
            assert client.breaker.failures == i + 1
        assert client.breaker.state == "open" and client.breaker.times_opened == 1

        attempts = 0
        ensure_stub = client._ensure_stub

        def counting_ensure_stub():
            nonlocal attempts
            attempts += 1
            return ensure_stub()

        monkeypatch.setattr(client, "_ensure_stub", counting_ensure_stub)
        for _ in range(5):
            assert_fallback(await client.predict(QUERY), config)
        assert attempts == 0 and client.num_fallbacks == 8

        clock.advance(5.1)
        assert client.breaker.state == "half-open"
        assert (await client.predict(QUERY)).fallback  # the probe: the port is still closed
        assert attempts == 1
        assert client.breaker.state == "open" and client.breaker.times_opened == 2
        assert (await client.predict(QUERY)).fallback
        assert attempts == 1
    finally:
        await client.close()


async def test_no_address_answers_the_fallback():
    config = ClientConfig(failure_threshold=2)
    client = PredictorClient(config)
    try:
        for _ in range(3):
            assert_fallback(await client.predict(QUERY), config)
        assert client.breaker.state == "open" and client.num_fallbacks == 3
    finally:
        await client.close()


async def test_successful_probe_closes_the_circuit():
    clock = FakeClock()
    client = PredictorClient(ClientConfig(failure_threshold=1, open_s=1.0), clock=clock)
    try:
        assert (await client.predict(QUERY)).fallback  # no address: opens
        assert client.breaker.state == "open"
        client._stub = FakeStub()  # the server is back
        assert (await client.predict(QUERY)).fallback  # still open: not asked
        assert client._stub.predict_calls == 0
        clock.advance(1.0)
        p = await client.predict(QUERY)
        assert not p.fallback and p.output_tokens == 42.0 and p.predictor_version == 3
        assert client.breaker.state == "closed"
    finally:
        await client.close()


async def test_refused_input_is_a_fallback_but_not_a_failure():
    client = PredictorClient(ClientConfig(failure_threshold=1))
    stub = client._stub = FakeStub()
    stub.refuse = True
    try:
        for _ in range(3):
            assert (await client.predict(QUERY)).fallback
        assert stub.predict_calls == 3 and client.breaker.state == "closed"
    finally:
        await client.close()


async def test_cancelled_probe_does_not_wedge_the_circuit():
    clock = FakeClock()
    client = PredictorClient(ClientConfig(failure_threshold=1, open_s=1.0, deadline_ms=60_000.0),
                             clock=clock)
    try:
        await client.predict(QUERY)  # no address: opens
        stub = client._stub = FakeStub()
        stub.gate = asyncio.Event()
        clock.advance(1.0)
        probe = asyncio.create_task(client.predict(QUERY))
        await stub.entered.wait()
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        stub.gate.set()
        p = await client.predict(QUERY)  # another probe may go, and it succeeds
        assert not p.fallback and stub.predict_calls == 2
        assert client.breaker.state == "closed"
    finally:
        await client.close()


async def test_every_opening_asks_for_the_address_again(closed_port_address):
    clock = FakeClock()
    asked = 0

    async def resolve() -> str:
        nonlocal asked
        asked += 1
        return closed_port_address

    client = PredictorClient(ClientConfig(failure_threshold=1, open_s=1.0, deadline_ms=2000.0),
                             resolve=resolve, clock=clock)
    try:
        assert (await client.predict(QUERY)).fallback  # before connect: no address yet
        await client._resolving
        assert asked == 1 and client.breaker.times_opened == 1
        clock.advance(1.0)
        assert (await client.predict(QUERY)).fallback  # the probe fails at the closed port
        await client._resolving
        assert asked == 2 and client.breaker.times_opened == 2
    finally:
        await client.close()


# ---- client: observations ----------------------------------------------------------------
async def test_observe_drops_the_oldest_beyond_the_buffer():
    client = PredictorClient(ClientConfig(max_pending_observations=3, observe_interval_s=3600.0))
    try:
        for i in range(5):
            client.observe(obs(f"o{i}"))
        assert client.num_observations_dropped == 2
        assert not await client.flush()  # no server: kept for later
        stub = client._stub = FakeStub()
        client.breaker.success()
        assert await client.flush()
        assert stub.observed == [["o2", "o3", "o4"]]
        assert client.num_observations_sent == 3
        assert await client.flush() and stub.observed == [["o2", "o3", "o4"]]
    finally:
        await client.close()


async def test_observe_batches_and_skips_unsendable_observations():
    client = PredictorClient(ClientConfig(observe_batch=2, observe_interval_s=3600.0))
    stub = client._stub = FakeStub()
    try:
        client.observe(obs("a"))
        client.observe(Observation("m", "bad", prompt_token_ids=(2**40,), output_tokens_per_turn=(1,)))
        client.observe(obs("b"))
        client.observe(obs("c"))
        assert client.num_observations_dropped == 1
        assert await client.flush()
        assert stub.observed == [["a", "b"], ["c"]]
        assert client.num_observations_sent == 3
    finally:
        await client.close()


async def test_observations_arriving_during_a_send_are_not_lost():
    client = PredictorClient(ClientConfig(max_pending_observations=2, observe_interval_s=3600.0))
    stub = client._stub = FakeStub()
    stub.gate = asyncio.Event()
    try:
        client.observe(obs("a"))
        client.observe(obs("b"))
        sending = asyncio.create_task(client.flush())
        await stub.entered.wait()  # [a, b] in flight
        client.observe(obs("c"))
        client.observe(obs("d"))  # the buffer is full: a and b make room
        assert client.num_observations_dropped == 2
        stub.gate.set()
        assert await sending
        assert stub.observed == [["a", "b"], ["c", "d"]]  # c and d were not lost
    finally:
        await client.close()
