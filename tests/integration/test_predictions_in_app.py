"""The Serve application's ingress predicts every request (the prediction travels with the
queue entry and the replica request, and comes back in the response's ``augserve``
extension) and reports finished requests, from which the hosted predictor learns."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def complete(app, **kw) -> dict:
    r = httpx.post(f"{app.base_url}/v1/chat/completions", timeout=60, json={
        "model": app.model, "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 6, "ignore_eos": True, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def test_ingress_attaches_predictions_and_the_predictor_learns(app):
    first = complete(app)["augserve"]["prediction"]
    assert first["output_tokens"] <= 6  # capped by max_tokens
    assert set(first) >= {"output_tokens_p50", "output_tokens_p90", "predictor_version",
                          "fallback", "api_durations", "length_model"}
    # Completions are observed in batches; once min_history (8) are in, the model is fitted.
    deadline = time.monotonic() + 90
    while True:
        prediction = complete(app)["augserve"]["prediction"]
        if prediction["predictor_version"] >= 1:
            break
        assert time.monotonic() < deadline, prediction
        time.sleep(0.3)
    assert not prediction["fallback"] and prediction["length_model"] == "hashed-linear"
    assert 1 <= prediction["output_tokens"] <= 6


def streamed_search(app) -> dict:
    body = {"model": app.model, "prompt": "Look it up.", "stream": True,
            "augmentation": [{"generate_tokens": 3, "api_name": "search", "api_duration_s": 0.05,
                              "api_tokens": 2}, {"generate_tokens": 2}]}
    with httpx.stream("POST", f"{app.base_url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        chunks = [json.loads(line[6:]) for line in r.iter_lines()
                  if line.startswith("data: {")]
    return chunks[-1]["augserve"]["prediction"]["api_durations"]["search"]


def test_augmented_requests_teach_the_predictor_their_api_durations(app):
    streamed_search(app)  # its measured API wait is observed when it completes
    deadline = time.monotonic() + 60
    while True:
        search = streamed_search(app)  # the last streamed chunk carries the prediction
        if search["samples"] > 0:
            break
        assert time.monotonic() < deadline, search
        time.sleep(0.3)
    # shrunk toward the 5 s prior by 2 pseudo-observations, from waits of about 0.05 s
    assert search["mean_s"] < 5.0


def test_replicas_discover_the_predictor(app):
    deadline = time.monotonic() + 60
    while True:
        replicas = app.queue_state()["replicas"]
        addresses = {r["predictor_address"] for r in replicas}
        if None not in addresses:
            break
        assert time.monotonic() < deadline, replicas
        time.sleep(0.5)
    assert len(addresses) == 1 and len(replicas) == 3, addresses
    host, port = addresses.pop().rsplit(":", 1)
    assert int(port) > 0
