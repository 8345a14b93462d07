"""Bad input gets a clear OpenAI-style error, never a 500, and loses nothing."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

pytestmark = pytest.mark.integration


def post(app, path: str, body, **kw) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{app.base_url}{path}", content=content,
                      headers={"content-type": "application/json"}, timeout=60, **kw)


def assert_error(resp: httpx.Response, status: int, param: str | None = None,
                 code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param and param.split(".")[0] in err["message"]
    if code is not None:
        assert err["code"] == code
    return err


CMPL = "/v1/completions"
CHAT = "/v1/chat/completions"


@pytest.mark.parametrize("path, body, param", [
    (CMPL, {"prompt": "x"}, "model"),
    (CMPL, {"model": "tiny-llama"}, "prompt"),
    (CHAT, {"model": "tiny-llama"}, "messages"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "max_tokens": "5"}, "max_tokens"),
    (CHAT, {"model": "tiny-llama", "messages": "hello"}, "messages"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    (CHAT, {"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}],
            "max_tokens": -1}, "max_tokens"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "max_tokens": 100000}, "max_tokens"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "temperature": 2.5}, "temperature"),
    (CHAT, {"model": "tiny-llama", "messages": [{"role": "user", "content": "x"}],
            "temperature": -1}, "temperature"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "slo": "platinum"}, "slo"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "slo": {"ttft_ms": -5}}, "slo.ttft_ms"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "priority": "high"}, "priority"),
    (CMPL, {"model": "tiny-llama", "prompt": [999999]}, "prompt"),
    (CMPL, {"model": "tiny-llama", "prompt": ""}, "prompt"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "logit_bias": {"99999": 5}}, "logit_bias"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "n": 3}, "n"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "max_tokens": 4, "min_tokens": 9}, "min_tokens"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "logit_bias": {"²": 1}}, "logit_bias"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "top_k": 10**30}, "top_k"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "augmentation": [
        {"generate_tokens": 5000}, {"generate_tokens": 5000}]}, "augmentation"),
    (CMPL, {"model": "tiny-llama", "prompt": "x", "max_tokens": 3, "augmentation": [
        {"generate_tokens": 5}]}, "max_tokens"),
])
def test_invalid_fields_are_400_naming_the_field(app, path, body, param):
    assert_error(post(app, path, body), 400, param)


def test_invalid_json_is_400(app):
    assert_error(post(app, CMPL, b"{not json"), 400, code="invalid_json")
    assert_error(post(app, CHAT, b"[1, 2]"), 400)
    assert_error(post(app, CMPL, b"[" * 100_000), 400, code="invalid_json")  # too deep


def max_model_len(app) -> int:
    return httpx.get(f"{app.base_url}/v1/models").json()["data"][0]["max_model_len"]


def test_prompt_plus_max_tokens_beyond_context_is_400(app):
    limit = max_model_len(app)
    long_prompt = [5 + i % 900 for i in range(limit - 50)]  # valid ids, 50 short of the limit
    err = assert_error(post(app, CMPL, {"model": app.model, "prompt": long_prompt,
                                        "max_tokens": 100}), 400, code="context_length_exceeded")
    assert str(limit) in err["message"]
    too_long = "word " * (limit * 2)
    assert_error(post(app, CHAT, {"model": app.model, "messages": [
        {"role": "user", "content": too_long}]}), 400, "messages", "context_length_exceeded")


def test_a_tool_that_is_not_registered_is_400(app):
    tool = {"type": "function", "function": {"name": "delete_everything", "parameters": {}}}
    err = assert_error(post(app, CHAT, {"model": app.model, "max_tokens": 4, "tools": [tool],
                                        "messages": [{"role": "user", "content": "hi"}]}),
                       400, "tools", "unknown_tool")
    assert "'delete_everything'" in err["message"] and "lookup" in err["message"]
    ok = dict(tool, function={"name": "lookup", "parameters": {}})
    r = post(app, CHAT, {"model": app.model, "max_tokens": 4, "tools": [ok],
                         "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text


def test_unknown_model_is_404(app):
    assert_error(post(app, CMPL, {"model": "gpt-9", "prompt": "x"}), 404, "model", "model_not_found")


def test_body_over_the_size_limit_is_413(app):
    body = json.dumps({"model": app.model, "prompt": "a" * (2 << 20)})
    assert_error(post(app, CMPL, body), 413, code="payload_too_large")


def test_unknown_route_and_method(app):
    assert_error(httpx.get(f"{app.base_url}/v1/nothing"), 404)
    assert_error(httpx.get(f"{app.base_url}{CMPL}"), 405)


def test_queue_full_is_429_with_retry_after_and_accepted_requests_all_finish(app):
    """A burst larger than the queue plus every replica's room: the excess gets 429 with
    Retry-After at once; every accepted request completes with its full length."""
    n, max_tokens = app.max_queued + 16 + 60, 96  # queue 64, room (8+1) + (4+1) + (2+0)

    async def burst():
        limits = httpx.Limits(max_connections=n)
        async with httpx.AsyncClient(base_url=app.base_url, timeout=300, limits=limits) as c:
            return await asyncio.gather(*(c.post(CMPL, json={
                "model": app.model, "prompt": f"burst {i}", "max_tokens": max_tokens,
                "ignore_eos": True}) for i in range(n)))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    rejected = [r for r in responses if r.status_code == 429]
    accepted = [r for r in responses if r.status_code == 200]
    assert rejected and len(accepted) >= app.max_queued
    for r in rejected:
        assert_error(r, 429, code="queue_full")
        assert int(r.headers["retry-after"]) >= 1
    assert all(r.json()["usage"]["completion_tokens"] == max_tokens for r in accepted)
