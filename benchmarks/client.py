"""Open-loop asynchronous client: each request is sent at its arrival time, whatever the
server is doing; responses never pace the arrivals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx

from benchmarks.metrics import RequestRecord
from benchmarks.workload import Workload, WorkloadRequest


class EndpointError(RuntimeError):
    """The endpoint cannot be used (unreachable, or it does not serve the model)."""


async def probe(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET /v1/models quickly; raise :class:`EndpointError` with a clear message."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as c:
            r = await c.get(f"{url.rstrip('/')}/v1/models")
    except httpx.HTTPError as exc:
        raise EndpointError(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
    if r.status_code != 200:
        raise EndpointError(f"{url}/v1/models answered {r.status_code}: {r.text[:200]}")
    data = r.json().get("data") or []
    if not data:
        raise EndpointError(f"{url} serves no model")
    return data[0]


def is_plain(req: WorkloadRequest) -> bool:
    """One turn and no API call: sent as an ordinary completion, not an augmentation."""
    return len(req.turns) == 1 and req.turns[0].api_name is None


def request_body(req: WorkloadRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "stream": True,
                            "stream_options": {"include_usage": True},
                            "prompt": list(req.prompt_token_ids) if req.prompt_token_ids
                            is not None else req.prompt_text}
    if is_plain(req):
        body.update(max_tokens=req.turns[0].generate_tokens, min_tokens=req.turns[0].generate_tokens,
                    ignore_eos=True)
    else:
        body["augmentation"] = [t.to_api() for t in req.turns]
    if req.slo:
        body["slo"] = req.slo
    return body


async def send_one(session: aiohttp.ClientSession, url: str, req: WorkloadRequest, model: str,
                   record: RequestRecord) -> None:
    record.send_s = time.perf_counter()
    try:
        async with session.post(f"{url}/v1/completions", json=request_body(req, model)) as resp:
            record.status = resp.status
            if resp.status != 200:
                record.error = (await resp.text())[:500]
                record.end_s = time.perf_counter()
                return
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                try:
                    _on_chunk(record, json.loads(line[6:]), time.perf_counter())
                except (ValueError, KeyError, TypeError) as exc:
                    record.error = f"malformed chunk: {type(exc).__name__}: {exc}"
        record.end_s = time.perf_counter()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        record.status = record.status if record.status != 200 else 0
        record.error = f"{type(exc).__name__}: {exc}"
        record.end_s = None


def _on_chunk(record: RequestRecord, chunk: dict[str, Any], now: float) -> None:
    if "error" in chunk:
        record.error = json.dumps(chunk["error"])[:500]
        return
    ext = chunk.get("augserve") or {}
    tokens = int(ext.get("tokens", 0))
    if tokens:
        if record.first_token_s is None:
            record.first_token_s = now
        record.chunk_times_s.append(now)
        record.chunk_tokens.append(tokens)
    if "turns" in ext:
        record.turn_tokens = [t["generated_tokens"] for t in ext["turns"]]
        record.api_time_s = sum(t["api_wait_s"] for t in ext["turns"])
    if chunk.get("usage"):
        record.output_tokens = chunk["usage"]["completion_tokens"]


async def run_workload(url: str, model: str, workload: Workload, *,
                       on_done: Callable[[RequestRecord], None] | None = None,
                       stop: asyncio.Event | None = None) -> tuple[list[RequestRecord], float]:
    """Send every request at its arrival; returns the records and the run's duration.
    If ``stop`` is set, requests not yet answered are cancelled and kept as failures."""
    records = [RequestRecord(r.request_id, r.slo, r.arrival_s or 0.0,
                             expected_tokens=r.generated_tokens,
                             # plain requests report no turns
                             expected_turn_tokens=[] if is_plain(r) else
                             [t.generate_tokens for t in r.turns],
                             api_time_s=r.api_time_s) for r in workload.requests]
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    base = url.rstrip("/")
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()

        async def scheduled(req: WorkloadRequest, rec: RequestRecord) -> None:
            rec.scheduled_s = start + (req.arrival_s or 0.0)
            delay = rec.scheduled_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await send_one(session, base, req, model, rec)
            finally:
                if on_done:
                    on_done(rec)

        tasks = [asyncio.ensure_future(scheduled(q, r)) for q, r in zip(workload.requests, records)]
        waiter = asyncio.ensure_future(asyncio.gather(*tasks, return_exceptions=True))
        if stop is not None:
            stopper = asyncio.ensure_future(stop.wait())
            racing: set[asyncio.Future[Any]] = {waiter, stopper}
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not waiter.done():
                for t in tasks:
                    t.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        duration = time.perf_counter() - start
    for rec in records:
        if not rec.sent:
            rec.error = "not sent (run stopped)"
        elif not rec.ok and rec.error is None:
            rec.error = "not answered (run stopped)"
    return records, duration
