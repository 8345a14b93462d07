"""The predictor over real gRPC on loopback, with a real redis-server process."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from benchmarks.client_capacity import free_port
from predictor_service.client import PredictorClient
from predictor_service.config import ClientConfig
from predictor_service.proto import predictor_pb2 as pb
from predictor_service.types import LengthQuery
from tests.integration.predictor_procs import PredictorProcess, RedisProcess

pytestmark = pytest.mark.integration
MODEL = "m"
SHORT = "Convert this to text to speech."
LONG = "Write a long essay about the history of"


def short_and_long(n: int) -> list[pb.Observation]:
    out = []
    for i in range(n):
        out.append(pb.Observation(model=MODEL, prompt_text=f"{SHORT} item {i}",
                                  output_tokens_per_turn=[10 + i % 3],
                                  api_calls=[pb.ApiCall(name="tts", duration_s=2.0)]))
        out.append(pb.Observation(model=MODEL, prompt_text=f"{LONG} topic {i}",
                                  output_tokens_per_turn=[300 + i % 7, 5]))
    return out


def predict(stub, text: str, **kw) -> pb.PredictResponse:
    return stub.Predict(pb.PredictRequest(model=MODEL, prompt_text=text, **kw), timeout=10)


@pytest.fixture
def redis_proc(tmp_path):
    proc = RedisProcess(free_port(), tmp_path / "redis")
    yield proc
    proc.stop()


@pytest.fixture
def server(tmp_path):
    procs = []

    def start(**config) -> PredictorProcess:
        config.setdefault("length_model", "hashed-linear")
        procs.append(PredictorProcess(config.pop("port", None) or free_port(), tmp_path, **config))
        return procs[-1]
    yield start
    for p in procs:
        p.stop()


def test_health_is_serving_and_reflection_lists_the_service(server):
    p = server()
    health = health_pb2_grpc.HealthStub(p.channel)
    for name in ("", "augserve.predictor.v1.Predictor"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(p.channel)
    replies = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"augserve.predictor.v1.Predictor", "grpc.health.v1.Health"} <= names
    info = p.info()
    assert info.persistence == "memory" and not info.redis_connected
    assert info.bins == 50 and info.bin_width_tokens == 10


def test_learning_moves_the_estimate_and_survives_a_restart(server, redis_proc):
    p = server(redis_url=redis_proc.url, refit_interval_s=0.2)
    stub = p.stub()
    before = predict(stub, f"{SHORT} new", api_names=["tts", "never_seen"])
    assert before.fallback and before.predictor_version == 0  # the prior
    reply = stub.Observe(pb.ObserveRequest(observations=short_and_long(20)), timeout=10)
    assert reply.accepted == 40 and not reply.rejected
    p.wait_version(MODEL, 1)
    short, long_ = predict(stub, f"{SHORT} new", api_names=["tts", "never_seen"]), predict(stub, f"{LONG} new")
    assert not short.fallback and short.predictor_version >= 1
    assert short.output_tokens < 40 < 200 < long_.output_tokens
    assert short.output_tokens_p50 <= short.output_tokens_p90
    assert abs(sum(short.bin_probs) - 1.0) < 1e-4 and len(short.bin_probs) == 50
    tts, unseen = short.api_durations
    assert (tts.name, tts.samples) == ("tts", 20) and 2.0 <= tts.mean_s < 2.5
    assert (unseen.samples, unseen.mean_s) == (0, 5.0)  # the prior

    assert p.stop() == 0  # a clean stop writes the state (no wait for the periodic flush)
    again = server(redis_url=redis_proc.url)
    info = again.info()
    assert info.redis_connected and info.persistence == "redis"
    (m,) = info.models
    assert (m.model, m.history_size) == (MODEL, 40) and m.version == short.predictor_version
    restored = predict(again.stub(), f"{SHORT} new", api_names=["tts", "never_seen"])
    assert restored.output_tokens == pytest.approx(short.output_tokens)
    assert restored.predictor_version == short.predictor_version and not restored.fallback
    assert restored.api_durations[0].samples == 20


def test_embedding_knn_restores_its_neighbours(server, redis_proc):
    p = server(redis_url=redis_proc.url, length_model="embedding-knn", refit_interval_s=0.2)
    stub = p.stub()
    stub.Observe(pb.ObserveRequest(observations=short_and_long(10)), timeout=30)
    p.wait_version(MODEL, 1)
    short, long_ = predict(stub, f"{SHORT} item 3"), predict(stub, f"{LONG} topic 3")
    assert short.output_tokens < 40 < 200 < long_.output_tokens
    assert short.length_model == "embedding-knn"
    assert p.stop() == 0  # a clean stop writes the state
    again = server(redis_url=redis_proc.url, length_model="embedding-knn")
    restored = predict(again.stub(), f"{SHORT} item 3")
    assert restored.output_tokens == pytest.approx(short.output_tokens)
    assert restored.predictor_version == short.predictor_version


@pytest.mark.parametrize("request_kw, needle", [
    ({"prompt_text": ""}, "prompt"),
    ({"prompt_text": "x", "prompt_tokens": -1}, "prompt_tokens"),
    ({"prompt_token_ids": [1, -2]}, "prompt_token_ids"),
    ({"prompt_text": "x", "api_names": [f"a{i}" for i in range(40)]}, "api_names"),
    ({"prompt_text": "x", "api_names": [""]}, "api_names"),
    ({"prompt_text": "x", "max_tokens": -5}, "max_tokens"),
    ({"prompt_text": "x", "model": "other"}, "unknown model"),
    ({"prompt_text": "x", "model": ""}, "model"),
])
def test_bad_input_is_invalid_argument(server, request_kw, needle):
    p = server(models=[MODEL])
    kw = {"model": MODEL, **request_kw}
    with pytest.raises(grpc.RpcError) as err:
        p.stub().Predict(pb.PredictRequest(**kw), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()
    with pytest.raises(grpc.RpcError) as err:  # one bad query fails the whole batch call
        p.stub().PredictBatch(pb.PredictBatchRequest(requests=[
            pb.PredictRequest(model=MODEL, prompt_text="fine"), pb.PredictRequest(**kw)]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert p.info().invalid_total == 2
    assert predict(p.stub(), "still serving").output_tokens > 0


def test_bad_observations_are_rejected_one_by_one_and_huge_prompts_are_cut(server):
    p = server()
    stub = p.stub()
    good = pb.Observation(model=MODEL, prompt_text="ok", output_tokens_per_turn=[3])
    reply = stub.Observe(pb.ObserveRequest(observations=[
        good,
        pb.Observation(model=MODEL, prompt_text="x", output_tokens_per_turn=[-1]),
        pb.Observation(model=MODEL, prompt_text="x", output_tokens_per_turn=[1],
                       api_calls=[pb.ApiCall(name="a", duration_s=float("nan"))]),
        pb.Observation(model=MODEL, prompt_text=""),
    ]), timeout=10)
    assert reply.accepted == 1
    assert [r.split(":")[0] for r in reply.rejected] == [
        "observations[1]", "observations[2]", "observations[3]"]
    huge = "word " * 400_000  # 2 MB: cut to max_prompt_chars before features
    assert predict(stub, huge, prompt_tokens=400_000).output_tokens > 0
    with pytest.raises(grpc.RpcError) as err:
        stub.Observe(pb.ObserveRequest(observations=[good] * 1025), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_client_honours_its_deadline_while_the_server_is_stopped(server):
    p = server()
    client = PredictorClient(ClientConfig(deadline_ms=20, failure_threshold=2, open_s=0.5),
                             address=p.address)
    q = LengthQuery(MODEL, "hello", prompt_tokens=1, api_names=("tts",), max_tokens=64)
    # The server's own prior is flagged fallback too; the client's fallback names no model.
    try:
        assert (await client.predict(q)).length_model == "hashed-linear"
        batch = await client.predict_batch([q, LengthQuery(MODEL, "other", max_tokens=3)])
        assert [b.length_model for b in batch] == ["hashed-linear"] * 2
        assert batch[1].output_tokens <= 3
        p.pause()  # SIGSTOP: the port accepts, nothing answers
        for _ in range(4):
            t0 = time.perf_counter()
            answer = await client.predict(q)
            elapsed = time.perf_counter() - t0
            assert answer.fallback and answer.length_model == ""
            assert answer.output_tokens == 64 and not answer.bin_probs  # capped by max_tokens
            assert answer.api_durations[0].mean_s == 5.0
            assert elapsed < 0.25, elapsed  # deadline 20 ms (+ scheduling on a busy machine)
        assert client.breaker.state == "open"
        p.resume()
        deadline = time.monotonic() + 10
        while (await client.predict(q)).length_model == "":
            assert time.monotonic() < deadline, "the client did not recover"
            await asyncio.sleep(0.1)
        p.stop()  # gone for good: fallbacks, still within the deadline
        t0 = time.perf_counter()
        assert (await client.predict(q)).length_model == ""
        assert time.perf_counter() - t0 < 0.25
    finally:
        await client.close()


def test_redis_unreachable_at_start_then_persisted_once_it_is_up(server, tmp_path):
    port = free_port()
    p = server(redis_url=f"redis://127.0.0.1:{port}/0", redis_retry_s=0.3, refit_interval_s=0.2)
    info = p.info()
    assert info.persistence == "redis" and not info.redis_connected
    stub = p.stub()
    stub.Observe(pb.ObserveRequest(observations=short_and_long(5)), timeout=10)
    assert predict(stub, SHORT).output_tokens > 0  # served from memory meanwhile
    redis_proc = RedisProcess(port, tmp_path / "late-redis")
    try:
        deadline = time.monotonic() + 20
        while not p.info().redis_connected:
            assert time.monotonic() < deadline, "never reconnected"
            time.sleep(0.1)
        r = redis_proc.client()
        deadline = time.monotonic() + 20
        while r.llen(f"augserve:predictor:history:{MODEL}") < 10:
            assert time.monotonic() < deadline, "observations made meanwhile were not written"
            time.sleep(0.1)
        # the duration statistics are a separate write of the same flush: wait for it too
        while r.get("augserve:predictor:durations") is None:
            assert time.monotonic() < deadline, "duration statistics were not written"
            time.sleep(0.1)
    finally:
        redis_proc.stop()


def test_a_corrupt_snapshot_is_ignored(server, redis_proc):
    r = redis_proc.client()
    r.sadd("augserve:predictor:models", MODEL)
    r.hset(f"augserve:predictor:state:{MODEL}",
           mapping={"version": 7, "length_model": "hashed-linear", "blob": b"not an npz"})
    good = '{"t": "hello there", "p": 2, "o": 12}'
    r.rpush(f"augserve:predictor:history:{MODEL}", "{broken", good, '{"t": "x", "p": -1, "o": 3}')
    r.set("augserve:predictor:durations", "[1, 2")
    p = server(redis_url=redis_proc.url)
    info = p.info()
    assert info.redis_connected
    # the fitted state's blob, two history entries and the durations
    assert info.corrupt_entries_ignored == 4
    (m,) = info.models
    assert m.history_size == 1 and m.version == 7  # version numbers are never reused
    assert predict(p.stub(), "hello there").output_tokens > 0


def test_trained_classifier_checkpoint_is_loaded_by_the_server(server, tmp_path):
    import json
    import subprocess
    import sys
    trace = {f"r{i}": [{"prompt": f"{SHORT} number {i}", "completion": "ok done", "api_time": 1.0,
                        "api_token": "x"},
                       {"prompt": f"{LONG} number {i}", "completion": "word " * 300}]
             for i in range(12)}
    (tmp_path / "trace.json").write_text(json.dumps(trace))
    ckpt = tmp_path / "clf.npz"
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "predictor", "train-classifier",
                          "--trace", str(tmp_path / "trace.json"), "--out", str(ckpt)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["samples"] == 24
    p = server(length_model="classifier", classifier_checkpoint=str(ckpt))
    short, long_ = predict(p.stub(), f"{SHORT} number 99"), predict(p.stub(), f"{LONG} number 99")
    assert short.length_model == "classifier" and not short.fallback  # from the checkpoint
    assert short.output_tokens < 100 < long_.output_tokens
    with pytest.raises(RuntimeError, match="did not start"):  # a bad checkpoint fails at start
        server(length_model="classifier", classifier_checkpoint=str(tmp_path / "missing.npz"))
