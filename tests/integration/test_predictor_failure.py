"""The predictor is advisory: when its actor dies, requests are still served (with the
client's fallback prediction, never a wait beyond the deadline); Serve restarts it, on a
new port, and the ingress finds it again."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import ray

from tests.integration.conftest import deployment_actor

pytestmark = [pytest.mark.integration, pytest.mark.destructive]


def prediction(app) -> dict:
    r = httpx.post(f"{app.base_url}/v1/completions", timeout=60, json={
        "model": app.model, "prompt": "x", "max_tokens": 3, "ignore_eos": True})
    assert r.status_code == 200, r.text
    return r.json()["augserve"]["prediction"]


def test_requests_are_served_while_the_predictor_restarts(app):
    assert prediction(app)["length_model"] == "hashed-linear"
    ray.kill(deployment_actor("Predictor"), no_restart=False)
    with ThreadPoolExecutor(16) as pool:  # a burst during the outage: every one served
        burst = list(pool.map(lambda _: prediction(app), range(16)))
    assert all(p["fallback"] for p in burst)
    answers = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        answers.append(prediction(app))  # 200 every time
        if answers[-1]["length_model"] and len(answers) > 1:
            break
        time.sleep(0.3)
    assert any(a["fallback"] and a["length_model"] == "" for a in answers), answers[:3]
    assert answers[-1]["length_model"] == "hashed-linear", "the restarted predictor was not found"
