"""Predictor benchmarks: accuracy on the trace's real prompts, and latency over gRPC on
loopback (a standalone server in its own process, callers in this one)."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.client_capacity import free_port
from benchmarks.runner import tokenize_fn

DEFAULT_TRACE = "../shared/workloads/mars_multi_api.json"


def add_bench_parsers(bench) -> None:
    a = bench.add_parser("predictor-accuracy", help="length models on the trace's real prompts")
    a.add_argument("--trace", default=DEFAULT_TRACE)
    a.add_argument("--seeds", default="0", help="comma-separated split seeds")
    a.add_argument("--tokenizer", default=None)
    a.add_argument("--out", default=None, help="write the JSON report here")
    lat = bench.add_parser("predictor-latency", help="Predict latency over gRPC on loopback")
    lat.add_argument("--trace", default=DEFAULT_TRACE)
    lat.add_argument("--length-models", default="hashed-linear,embedding-knn")
    lat.add_argument("--concurrency", default="1,64")
    lat.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    lat.add_argument("--tokenizer", default=None)
    lat.add_argument("--out", default=None)


def main(args: argparse.Namespace) -> int:
    from benchmarks.predictor_accuracy import (  # numpy, the predictor: on use
        evaluate,
        format_table,
        trace_segments,
    )
    segments = trace_segments(args.trace, tokenize_fn(args.tokenizer))
    if args.bench == "predictor-accuracy":
        reports = [evaluate(segments, int(s)) for s in args.seeds.split(",")]
        for r in reports:
            print(f"seed {r['seed']}: train {r['train_requests']} requests / {r['train_segments']} "
                  f"segments, test {r['test_requests']} / {r['test_segments']}")
            print(format_table(r))
        report = {"reports": reports}
    else:
        report = {"latency": [latency_one(segments, m, [int(c) for c in args.concurrency.split(",")],
                                          args.seconds) for m in args.length_models.split(",")]}
        print(format_latency(report["latency"]))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


def train_classifier_on_trace(args: argparse.Namespace) -> int:
    from benchmarks.predictor_accuracy import (
        trace_segments,  # numpy, the predictor: on use
    )
    from predictor_service.training import train_classifier
    segments = trace_segments(args.trace, tokenize_fn(args.tokenizer))
    result = train_classifier([s.text for s in segments], [s.prompt_tokens for s in segments],
                              [s.output_tokens for s in segments], args.out)
    print(json.dumps(result, indent=2))
    return 0


# ---- latency -------------------------------------------------------------------------
def latency_one(segments, length_model: str, levels: list[int], seconds: float) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "predictor", "serve",
                               "--port", str(port), "--host", "127.0.0.1",
                               "--length-model", length_model], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None  # stdout=PIPE
        line = server.stdout.readline()  # "predictor listening on ..." once it serves
        if "listening" not in line:
            raise RuntimeError(f"the predictor did not start: {line!r}")
        return asyncio.run(_measure(f"127.0.0.1:{port}", segments, length_model, levels, seconds))
    finally:
        server.terminate()
        server.wait(30)


async def _measure(address: str, segments, length_model: str, levels: list[int],
                   seconds: float) -> dict:
    import grpc

    from benchmarks.predictor_accuracy import split  # numpy, the predictor: on use
    from predictor_service.client import observation_to_pb, query_to_pb
    from predictor_service.proto import predictor_pb2 as pb
    from predictor_service.proto import predictor_pb2_grpc as pb_grpc
    from predictor_service.types import LengthQuery, Observation

    train, test = split(segments, seed=0)
    channel = grpc.aio.insecure_channel(address)
    stub = pb_grpc.PredictorStub(channel)
    obs = [observation_to_pb(Observation("bench", s.text, (), s.prompt_tokens, (s.output_tokens,)))
           for s in train]
    for i in range(0, len(obs), 256):
        await stub.Observe(pb.ObserveRequest(observations=obs[i:i + 256]), timeout=600)
    while True:  # wait for the first fit
        info = await stub.Info(pb.InfoRequest(), timeout=10)
        if info.models and info.models[0].version >= 1:
            break
        await asyncio.sleep(0.2)
    queries = [query_to_pb(LengthQuery("bench", s.text, (), s.prompt_tokens)) for s in test]
    out: dict[str, Any] = {"length_model": length_model, "levels": []}
    for n in levels:
        out["levels"].append(await _closed_loop(
            n, seconds, lambda i: stub.Predict(queries[i % len(queries)], timeout=30)))
    # The transport's own ceiling: the same callers on Info (no model work at all).
    info = pb.InfoRequest()
    out["info_rpc"] = await _closed_loop(max(levels), seconds / 2,
                                         lambda i: stub.Info(info, timeout=30))
    batch = pb.PredictBatchRequest(requests=queries[:64])
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds / 2:
        await stub.PredictBatch(batch, timeout=60)
        calls += 1
    out["batch_predictions_per_s"] = 64 * calls / (time.perf_counter() - t0)
    out["distinct_prompts"] = len(queries)
    await channel.close()
    return out


async def _closed_loop(n: int, seconds: float, call) -> dict:
    """``n`` callers, each sending its next call when the previous answered."""
    latencies: list[float] = []
    counter = [0]
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            counter[0] += 1
            t0 = time.perf_counter()
            await call(counter[0])
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(n)))
    lat = np.array(latencies) * 1000
    return {"concurrency": n, "calls": len(lat),
            "calls_per_s": len(lat) / (time.perf_counter() - started),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def format_latency(results: list[dict]) -> str:
    lines = ["| length model | callers | p50 (ms) | p99 (ms) | predictions/s |", "|---|---|---|---|---|"]
    for r in results:
        for lv in r["levels"]:
            lines.append(f"| {r['length_model']} | {lv['concurrency']} | {lv['p50_ms']:.2f} | "
                         f"{lv['p99_ms']:.2f} | {lv['calls_per_s']:.0f} |")
        lines.append(f"| {r['length_model']} | PredictBatch ×64 | | | {r['batch_predictions_per_s']:.0f} |")
        i = r["info_rpc"]
        lines.append(f"| (Info RPC, no model work) | {i['concurrency']} | {i['p50_ms']:.2f} | "
                     f"{i['p99_ms']:.2f} | {i['calls_per_s']:.0f} |")
    return "\n".join(lines)
