"""What ingress + queue manager add over calling the engine directly.

One run, one engine: a one-replica deployment of the local config.  For each client
count, alternate rounds of (a) the *direct* path — requests issued inside the replica
process straight to its vLLM ``AsyncLLM`` — and (b) the *full* path — streamed HTTP
requests through the proxy, the ingress, the queue manager and the replica.  Same
prompt, same ``max_tokens`` (``ignore_eos``), same concurrency.  Reports p50/p99
end-to-end latency of each path, the added milliseconds, and output-token throughput
of the full path as a fraction of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

from benchmarks.stats import percentile


async def run_full(base_url: str, model: str, prompt_token_ids: list[int], max_tokens: int,
                   num_requests: int, concurrency: int) -> dict[str, Any]:
    """Streamed completions over HTTP through the whole path."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    records: list[dict[str, float]] = []
    body = {"model": model, "prompt": prompt_token_ids, "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        async def one() -> None:
            async with sem:
                t0 = time.perf_counter()
                first, tokens = None, 0
                async with client.stream("POST", "/v1/completions", json=body) as resp:
                    resp.raise_for_status()
                    async for line in resp.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if first is None and (chunk.get("augserve") or {}).get("tokens"):
                            first = time.perf_counter()  # first token, as on the direct path
                        if chunk.get("usage"):
                            tokens = chunk["usage"]["completion_tokens"]
                t1 = time.perf_counter()
                records.append({"latency_s": t1 - t0, "ttft_s": (first or t1) - t0,
                                "tokens": tokens})

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(num_requests)))
        return {"wall_s": time.perf_counter() - start, "records": records}


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    records = [r for run in runs for r in run["records"]]
    lat = [r["latency_s"] * 1000 for r in records]
    ttft = [r["ttft_s"] * 1000 for r in records]
    tokens = sum(r["tokens"] for r in records)
    wall = sum(run["wall_s"] for run in runs)
    return {"n": len(records), "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "ttft_p50_ms": percentile(ttft, 50), "tokens": tokens,
            "tokens_per_s": tokens / wall if wall else 0.0}


def bench_config(port: int, stream_interval_ms: float | None = None) -> dict[str, Any]:
    import yaml

    from orchestrator.serving import DEFAULT_CONFIG
    raw = copy.deepcopy(yaml.safe_load(DEFAULT_CONFIG.read_text()))
    raw["http_options"]["port"] = port
    app = raw["applications"][0]
    app["args"]["replicas"] = [r for r in app["args"]["replicas"] if r["name"] == "replica-large"]
    app["args"]["replicas"][0]["engine"]["max_num_seqs"] = 32
    if stream_interval_ms is not None:
        app["args"]["replicas"][0]["stream_interval_ms"] = stream_interval_ms
    app["deployments"] = [d for d in app["deployments"] if d["name"] != "replica-small"]
    return raw


async def measure(base_url: str, handle: Any, model: str, prompt: list[int], max_tokens: int,
                  concurrencies: list[int], per_client: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    await run_full(base_url, model, prompt, max_tokens, 8, 4)  # warm-up
    for c in concurrencies:
        n = max(c * per_client, 16)
        direct, full = [], []
        for _ in range(rounds):  # alternate to spread machine noise over both paths
            direct.append(await handle.bench_direct.remote(prompt, max_tokens, n, c))
            full.append(await run_full(base_url, model, prompt, max_tokens, n, c))
        d, f = summarize(direct), summarize(full)
        rows.append({"concurrency": c, "direct": d, "full": f,
                     "added_p50_ms": f["p50_ms"] - d["p50_ms"],
                     "added_p99_ms": f["p99_ms"] - d["p99_ms"],
                     "added_ttft_p50_ms": f["ttft_p50_ms"] - d["ttft_p50_ms"],
                     "throughput_fraction": f["tokens_per_s"] / d["tokens_per_s"]})
    return rows


def print_table(rows: list[dict[str, Any]], max_tokens: int, prompt_tokens: int) -> None:
    print(f"\noverhead of ingress + queue manager (streamed, {prompt_tokens}-token prompt, "
          f"{max_tokens} output tokens)")
    print("| clients | direct p50 / p99 ms | full p50 / p99 ms | added p50 / p99 ms "
          "| added TTFT p50 ms | direct tok/s | full tok/s | full / direct |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, f = r["direct"], r["full"]
        print(f"| {r['concurrency']} | {d['p50_ms']:.1f} / {d['p99_ms']:.1f} "
              f"| {f['p50_ms']:.1f} / {f['p99_ms']:.1f} "
              f"| {r['added_p50_ms']:.1f} / {r['added_p99_ms']:.1f} "
              f"| {r['added_ttft_p50_ms']:.1f} | {d['tokens_per_s']:.0f} "
              f"| {f['tokens_per_s']:.0f} | {r['throughput_fraction']:.1%} |")


def main(args: argparse.Namespace) -> int:
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from orchestrator import serving

    schema = ServeDeploySchema.model_validate(bench_config(args.port, args.stream_interval_ms))
    serving.start_ray()
    try:
        serving.deploy(schema)
        handle = serve.get_deployment_handle("replica-large", "augserve")
        prompt = [5 + (i * 7) % 900 for i in range(args.prompt_tokens)]
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        rows = asyncio.run(measure(f"http://127.0.0.1:{args.port}", handle, "tiny-llama",
                                   prompt, args.max_tokens, concurrencies,
                                   args.requests_per_client, rounds=2))
        print_table(rows, args.max_tokens, args.prompt_tokens)
        interval = args.stream_interval_ms
        print(f"replica stream_interval_ms: {'config default' if interval is None else interval}")
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(rows, indent=2))
    finally:
        serving.shutdown()
    return 0
