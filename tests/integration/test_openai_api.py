"""The official ``openai`` client against the running application."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration


def client(app) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0)


def aclient(app) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{app.base_url}/v1", api_key="unused", max_retries=0,
                              timeout=120)


def test_models_and_health(app):
    models = client(app).models.list()
    assert [m.id for m in models.data] == [app.model]
    health = httpx.get(f"{app.base_url}/health").json()
    assert health["status"] == "ok" and health["healthy_replicas"][app.model] == 3


def test_chat_completion(app):
    resp = client(app).chat.completions.create(
        model=app.model, messages=[{"role": "user", "content": "Hello"}], max_tokens=12,
        extra_body={"ignore_eos": True, "priority": 1, "slo": "interactive", "session_id": "s-1"})
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant" and resp.choices[0].message.content
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 12 and resp.usage.prompt_tokens > 0
    assert resp.model_extra["augserve"]["gpu_class"] in {"large", "medium", "small"}


def test_chat_completion_stream(app):
    stream = client(app).chat.completions.create(
        model=app.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=10,
        stream=True, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    assert chunks[-1].usage.completion_tokens == 10 and not chunks[-1].choices
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text


def test_completion_and_stream(app):
    c = client(app)
    resp = c.completions.create(model=app.model, prompt="The queue", max_tokens=7,
                                extra_body={"ignore_eos": True})
    assert resp.object == "text_completion" and resp.usage.completion_tokens == 7
    assert resp.choices[0].text
    chunks = list(c.completions.create(model=app.model, prompt=[5, 6, 7], max_tokens=6,
                                       stream=True, extra_body={"ignore_eos": True}))
    assert "".join(ch.choices[0].text for ch in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_tool_definitions_render_and_tool_call_tokens_stay_visible(app):
    c = client(app)
    # "lookup" is the test app's registered server-side tool (others would be 400)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    plain = c.chat.completions.create(model=app.model, messages=messages, max_tokens=1)
    # logit_bias forces the tiny random model to emit the <tool_call> token (id 3)
    with_tools = c.chat.completions.create(
        model=app.model, messages=messages, tools=tools, max_tokens=2,
        logit_bias={"3": 100}, extra_body={"ignore_eos": True})
    assert with_tools.usage.prompt_tokens > plain.usage.prompt_tokens + 20
    assert with_tools.choices[0].message.content.startswith("<tool_call>")
    follow_up = messages + [
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18}"}]
    resp = c.chat.completions.create(model=app.model, messages=follow_up, tools=tools,
                                     max_tokens=3, extra_body={"ignore_eos": True})
    assert resp.usage.prompt_tokens > with_tools.usage.prompt_tokens


def test_fifty_concurrent_requests_complete_with_requested_lengths_on_both_classes(app):
    async def run():
        c = aclient(app)
        lengths = [8 + (i % 5) * 8 for i in range(50)]

        async def one(i, n):
            if i % 2:
                r = await c.chat.completions.create(
                    model=app.model, messages=[{"role": "user", "content": f"q{i}"}],
                    max_tokens=n, extra_body={"ignore_eos": True})
            else:
                r = await c.completions.create(model=app.model, prompt=f"p{i}", max_tokens=n,
                                               extra_body={"ignore_eos": True})
            return n, r
        results = await asyncio.gather(*(one(i, n) for i, n in enumerate(lengths)))
        await c.close()
        return results

    results = asyncio.run(run())
    assert len(results) == 50
    assert all(r.usage.completion_tokens == n for n, r in results)
    classes = Counter(r.model_extra["augserve"]["gpu_class"] for _, r in results)
    assert classes["large"] > 0 and classes["small"] > 0, classes
    assert classes["large"] > classes["small"]  # the larger replica has more room


AUGMENTATION = [
    {"generate_tokens": 5, "api_name": "search", "api_duration_s": 0.2, "api_tokens": 7},
    {"generate_tokens": 3, "api_name": "calc", "api_duration_s": 0.1, "api_tokens": 2},
    {"generate_tokens": 4},
]


def test_augmented_chat_runs_every_turn_with_tool_waits(app):
    resp = client(app).chat.completions.create(
        model=app.model, messages=[{"role": "user", "content": "plan"}],
        extra_body={"augmentation": AUGMENTATION})
    assert resp.usage.completion_tokens == 12
    turns = resp.model_extra["augserve"]["turns"]
    assert [t["generated_tokens"] for t in turns] == [5, 3, 4]
    assert [t["api_name"] for t in turns] == ["search", "calc", None]
    # asyncio timers may wake a fraction of a millisecond early on the monotonic clock
    assert turns[0]["api_wait_s"] >= 0.19 and turns[1]["api_wait_s"] >= 0.09
    assert "queue_s" in turns[0]
    # each turn runs on the whole history: prompt + generated + tool tokens
    assert turns[1]["context_tokens"] == turns[0]["context_tokens"] + 5 + 7
    assert turns[2]["context_tokens"] == turns[1]["context_tokens"] + 3 + 2
    # the replicas run lamps: each call got a strategy, and the replica reports its policy
    # counters and the profile it measured at start
    assert turns[0]["strategy"] in ("preserve", "discard") and turns[2]["strategy"] is None
    deadline = time.monotonic() + 10
    while True:
        extras = [r["extra"] for r in app.queue_state()["replicas"]]
        calls = sum(e["calls_preserve"] + e["calls_discard"] for e in extras)
        if calls >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert calls >= 2, extras
    # this request's own calls are among those the replicas counted, by strategy
    for strategy in ("preserve", "discard"):
        mine = sum(1 for t in turns if t["strategy"] == strategy)
        assert sum(e[f"calls_{strategy}"] for e in extras) >= mine, (strategy, extras)
    for e in extras:
        assert e["profile_c_ms"] > 0 and e["profile_saturation_tokens"] >= 16


def test_augmented_stream_shows_turns_and_api_calls(app):
    with httpx.stream("POST", f"{app.base_url}/v1/completions", timeout=60, json={
            "model": app.model, "prompt": "go", "stream": True, "augmentation": AUGMENTATION,
            "stream_options": {"include_usage": True}}) as resp:
        chunks = [json.loads(line[6:]) for line in resp.iter_lines()
                  if line.startswith("data: {")]
    exts = [c["augserve"] for c in chunks if "augserve" in c]
    events = [e["api_call"]["name"] for e in exts if "api_call" in e]
    assert events == ["search", "calc"]
    per_turn = Counter()
    for e in exts:
        per_turn[e["turn"]] += e["tokens"]
    assert dict(per_turn) == {0: 5, 1: 3, 2: 4}
    assert any("turns" in e for e in exts)
    assert chunks[-1]["usage"]["completion_tokens"] == 12
