"""Requests issued inside a replica process straight to its engine (no ingress, no queue
manager): the "direct" side of ``augserve bench overhead``."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from replicas.types import ReplicaRequest, RequestHeader, SamplingSpec


async def run_direct(engine: Any, prompt_token_ids: list[int], max_tokens: int,
                     num_requests: int, concurrency: int) -> dict[str, Any]:
    """Inside a replica: ``num_requests`` requests, ``concurrency`` at a time."""
    sampling = SamplingSpec(max_tokens=max_tokens, ignore_eos=True)
    sem = asyncio.Semaphore(concurrency)
    records: list[dict[str, float]] = []

    async def one() -> None:
        async with sem:
            req = ReplicaRequest(RequestHeader(f"direct-{uuid.uuid4().hex}", "bench"),
                                 list(prompt_token_ids),
                                 sampling)
            t0 = time.perf_counter()
            first, tokens = None, 0
            async for delta in engine.generate(req):
                if delta.token_ids and first is None:
                    first = time.perf_counter()
                tokens += len(delta.token_ids)
            t1 = time.perf_counter()
            records.append({"latency_s": t1 - t0, "ttft_s": (first or t1) - t0, "tokens": tokens})

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(num_requests)))
    return {"wall_s": time.perf_counter() - start, "records": records}
