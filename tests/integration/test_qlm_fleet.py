"""The global queue on the heterogeneous fleet (three real vLLM CPU replicas of different
capacity, queue durable in a real redis-server): mixed SLO classes, admission, request
ids, and Redis paused mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.integration.test_bad_input import CMPL, assert_error

pytestmark = pytest.mark.integration


def body(app, i: int, slo, max_tokens: int = 24, **extra) -> dict:
    out = {"model": app.model, "prompt": f"mixed {i}", "max_tokens": max_tokens,
           "ignore_eos": True, **extra}
    if slo is not None:
        out["slo"] = slo
    return out


def test_a_mixed_slo_workload_is_served_by_all_three_replica_classes(app):
    slos = ["interactive", "standard", "batch", None, {"ttft_ms": 60_000}]
    n = 60

    async def run():
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=app.base_url, timeout=300, limits=limits) as c:
            return await asyncio.gather(*(c.post(CMPL, json=body(
                app, i, slos[i % len(slos)], max_tokens=16 + 8 * (i % 4))) for i in range(n)))

    responses = asyncio.run(run())
    codes = Counter(r.status_code for r in responses)
    assert set(codes) <= {200, 429}, codes  # interactive ones may be refused: never 5xx
    for i, r in enumerate(responses):
        if r.status_code == 429:
            assert slos[i % len(slos)] == "interactive", r.text
            assert_error(r, 429, param="slo", code="slo_unattainable")
            assert int(r.headers["retry-after"]) >= 1
        else:
            assert r.json()["usage"]["completion_tokens"] == 16 + 8 * (i % 4)
    served = Counter(r.json()["augserve"]["gpu_class"] for r in responses if r.status_code == 200)
    assert set(served) == {"large", "medium", "small"}, served
    assert served["large"] > served["small"], served  # the faster/bigger class gets more
    state = app.wait_idle()
    assert state["policy"] == "qlm" and state["placement"] == "estimated-completion"
    attained = state["slo_attainment"]
    assert {"interactive", "standard", "batch", "custom"} <= set(attained), attained
    assert attained["standard"]["total"] >= 2 * n // len(slos)  # the default class too
    assert state["durability"]["store"] == "redis" and state["durability"]["mode"] == "required"
    for r in state["replicas"]:
        assert r["estimated_tokens_per_s"] > 0 and "virtual_queue" in r


def test_slo_classes_are_listed_and_bad_slos_are_refused_or_best_effort(app):
    listed = httpx.get(f"{app.base_url}/v1/admin/slo_classes").json()
    assert listed["default_slo_class"] == "standard"
    assert listed["slo_classes"]["interactive"]["admission"] == "reject"
    assert_error(httpx.post(f"{app.base_url}{CMPL}", json=body(app, 0, "platinum")),
                 400, param="slo")
    refused = httpx.post(f"{app.base_url}{CMPL}", json=body(app, 1, "instant"))
    assert_error(refused, 429, param="slo", code="slo_unattainable")
    assert "ttft_ms 1" in refused.json()["error"]["message"] and refused.headers["retry-after"]
    # explicit targets are admitted best effort even when they cannot be met
    ok = httpx.post(f"{app.base_url}{CMPL}", json=body(app, 2, {"ttft_ms": 1}), timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 24
    assert app.wait_idle()["counters"]["best_effort"] >= 1


def test_x_request_id_makes_submission_idempotent(app):
    rid = f"client-{uuid.uuid4().hex}"
    url = f"{app.base_url}{CMPL}"
    first = httpx.post(url, json=body(app, 0, None), headers={"X-Request-Id": rid}, timeout=60)
    assert first.status_code == 200 and first.headers["x-request-id"] == rid
    again = httpx.post(url, json=body(app, 0, None), headers={"X-Request-Id": rid}, timeout=60)
    assert_error(again, 409, param="X-Request-Id", code="duplicate_request_id")
    assert "already finished" in again.json()["error"]["message"]
    bad = httpx.post(url, json=body(app, 0, None), headers={"X-Request-Id": "no spaces"})
    assert_error(bad, 400, param="X-Request-Id")


def test_redis_paused_mid_run_refuses_new_requests_and_loses_nothing_accepted(app):
    """durability: required.  While Redis does not answer, new requests get 503 naming
    durability; streams accepted before go on; once Redis answers again requests are
    accepted, and every accepted request's record ends finished (none left behind)."""
    redis = app.redis
    url = f"{app.base_url}{CMPL}"
    ids = [f"pause-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
    with httpx.Client(timeout=120) as c:
        with c.stream("POST", url, headers={"X-Request-Id": ids[0]}, json=body(
                app, 0, None, max_tokens=300, stream=True)) as stream:
            lines = stream.iter_lines()
            next(lines)  # accepted and streaming
            os.kill(redis.proc.pid, signal.SIGSTOP)
            try:
                refused = c.post(url, json=body(app, 1, None), headers={"X-Request-Id": ids[1]})
                assert_error(refused, 503, code="durability_unavailable")
                assert refused.headers["retry-after"]
                rest = [line for line in lines if line]
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)
    assert rest[-1] == "data: [DONE]"
    deadline = time.monotonic() + 30
    while True:  # the store reconnects by itself
        r = httpx.post(url, json=body(app, 2, None), headers={"X-Request-Id": ids[2]}, timeout=60)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        assert_error(r, 503, code="durability_unavailable")
        ids[2] = f"{ids[2]}x"
        time.sleep(0.5)
    assert r.status_code == 200, r.text
    app.wait_idle()
    client = redis.client()
    deadline = time.monotonic() + 10
    while client.keys("augserve:queue:req:*") and time.monotonic() < deadline:
        time.sleep(0.2)  # the outbox drains
    assert client.keys("augserve:queue:req:*") == []
    assert client.get(f"augserve:queue:done:{ids[0]}") == b"completed"
    assert client.get(f"augserve:queue:done:{ids[2]}") == b"completed"
    assert client.get(f"augserve:queue:done:{ids[1]}") is None  # refused: never accepted
