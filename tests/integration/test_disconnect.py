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
