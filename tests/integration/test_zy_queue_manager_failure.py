"""The queue manager is the control plane: when its actor dies, streams already running
finish (tokens never pass through it), requests in the outage get 503 (never 500), and
Serve restarts it, after which requests are served again."""

from __future__ import annotations

import time

import httpx
import pytest
import ray

from tests.integration.conftest import deployment_actor

pytestmark = pytest.mark.integration


def test_killing_the_queue_manager_loses_no_running_stream(app):
    body = {"model": app.model, "prompt": "x", "max_tokens": 400, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=app.base_url, timeout=120) as c:
        with c.stream("POST", "/v1/completions", json=body) as resp:
            lines = resp.iter_lines()
            next(lines)
            ray.kill(deployment_actor("QueueManager"), no_restart=False)
            rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert '"completion_tokens":400' in rest[-2]

    codes = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = httpx.post(f"{app.base_url}/v1/completions", timeout=60, json={
            "model": app.model, "prompt": "x", "max_tokens": 3, "ignore_eos": True})
        codes.append(r.status_code)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and r.headers.get("retry-after"), r.text
        time.sleep(0.5)
    assert codes[-1] == 200, codes
