"""A client that goes away aborts its engine request and frees its queue slot."""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_disconnect_mid_stream_aborts_engine_request(app):
    body = {"model": app.model, "prompt": "long", "max_tokens": 1900, "ignore_eos": True,
            "stream": True}
    saw_kv = False
    with httpx.Client(base_url=app.base_url, timeout=60) as c:
        with c.stream("POST", "/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            for _ in range(20):
                next(lines)
            # while streaming: one request in flight and KV held on its replica
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not saw_kv:
                state = app.queue_state()
                saw_kv = state["num_in_flight"] == 1 and any(
                    r["kv_usage"] > 0 for r in state["replicas"])
                time.sleep(0.1)
        # leaving the block closes the connection mid-stream
    assert saw_kv
    state = app.wait_idle(timeout_s=15)
    assert state["num_in_flight"] == 0
    assert all(r["kv_usage"] == 0 and r["num_running"] == 0 for r in state["replicas"])
    assert state["outcomes"]["cancelled"] >= 1


def test_disconnect_while_non_streaming_aborts_too(app):
    body = {"model": app.model, "prompt": "long", "max_tokens": 1900, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{app.base_url}/v1/completions", json=body, timeout=1.5)
    state = app.wait_idle(timeout_s=15)
    assert state["num_in_flight"] == 0
    assert all(r["kv_usage"] == 0 for r in state["replicas"])


def test_disconnect_while_queued_leaves_the_queue(app):
    """Fill every replica's room with long streams, queue one more request, let its client
    go away: the queue forgets it; then the streams are closed and all is idle again."""
    import asyncio

    room = sum(r["max_in_flight"] for r in app.queue_state()["replicas"] if r["healthy"])
    body = {"model": app.model, "prompt": "fill", "max_tokens": 1900, "ignore_eos": True,
            "stream": True}

    async def scenario():
        async with httpx.AsyncClient(base_url=app.base_url, timeout=120,
                                     limits=httpx.Limits(max_connections=room + 8)) as c:
            streams = [c.stream("POST", "/v1/completions", json=body) for _ in range(room)]
            opened = [await s.__aenter__() for s in streams]
            assert all(r.status_code == 200 for r in opened)
            queued = asyncio.ensure_future(c.post("/v1/completions", json={
                "model": app.model, "prompt": "waits", "max_tokens": 4}))
            deadline = time.monotonic() + 10
            while app.queue_state()["num_queued"] < 1:
                assert time.monotonic() < deadline, app.queue_state()
                await asyncio.sleep(0.1)
            queued.cancel()  # the client gives up while its request is queued
            with pytest.raises(asyncio.CancelledError):
                await queued
            deadline = time.monotonic() + 10
            while app.queue_state()["num_queued"] != 0:
                assert time.monotonic() < deadline, app.queue_state()
                await asyncio.sleep(0.1)
            for s in streams:
                await s.__aexit__(None, None, None)

    asyncio.run(scenario())
    state = app.wait_idle(timeout_s=30)
    assert state["num_queued"] == 0 and state["num_in_flight"] == 0
