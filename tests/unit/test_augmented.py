"""The turn runner (augmented requests) with a fake engine, clock and sleep (no vLLM)."""

import pytest

from orchestrator.errors import InvalidRequestError
from orchestrator.protocol import CompletionRequest, parse_request
from orchestrator.request_builder import augmentation_turns
from replicas.augmented import filler_tokens
from replicas.coalesce import merge_runs
from replicas.pause_budget import PauseBudget
from replicas.policy import BatchLoad, ReplicaProfile, make_policy
from replicas.turns import TurnRunner
from replicas.types import (
    AugTurn,
    ReplicaRequest,
    RequestHeader,
    SamplingSpec,
    TokenDelta,
)
from tests.unit.fakes import FakeClock


class FakeEngine:
    """Same interface as ReplicaEngine: generate yields max_tokens deltas of one token;
    sessions record the chunks they were sent."""

    max_model_len = None
    chunk_tokens = None
    alive = True
    tokenizer = None

    def __init__(self):
        self.requests: list[ReplicaRequest] = []
        self.sessions: list[FakeSession] = []

    def tokenize(self, text):
        return []

    def detokenize(self, token_ids):
        return ""

    async def generate(self, request, extra_args=None):
        self.requests.append(request)
        n = request.sampling.max_tokens
        for i in range(n):
            yield TokenDelta(text=f"[{i}]", token_ids=[900 + i],
                             finish_reason="length" if i == n - 1 else None)

    def open_session(self, request_id, priority=0):
        self.sessions.append(FakeSession(request_id))
        return self.sessions[-1]

    def kv_bytes_per_token(self):
        return 512

    def process_ids(self) -> list[int]:
        return []


class FakeSession:
    def __init__(self, request_id):
        self.request_id, self.chunks, self.closed = request_id, [], False

    async def turn(self, token_ids, spec, extra_args=None):
        assert not self.closed
        self.chunks.append(list(token_ids))
        for i in range(spec.max_tokens):
            yield TokenDelta(text="", token_ids=[700 + i],
                             finish_reason="length" if i == spec.max_tokens - 1 else None)

    async def close(self):
        self.closed = True


# recomputing is expensive on this "GPU" (1 ms/token + 50 ms per step): short calls preserve
PROFILE = ReplicaProfile(1.0, 50.0, 256, 512)


def run_augmented(engine, req, *, policy="fcfs", clock=None, sleep=None,
                  on_pause=lambda paused: None, budget=None):
    import asyncio
    import time
    runner = TurnRunner(engine, make_policy(policy), profile=lambda: PROFILE,
                        load=lambda: BatchLoad(), kv_usage=lambda: 0.0,
                        budget=budget if budget is not None else PauseBudget(3, 0.85),
                        clock=clock or time.monotonic,
                        sleep=sleep or asyncio.sleep, on_pause=on_pause)
    return runner.run(req)


async def test_turns_run_on_the_whole_history_with_tool_waits():
    clock, slept, pauses = FakeClock(), [], []

    async def sleep(s):
        slept.append(s)
        clock.advance(s)

    engine = FakeEngine()
    turns = (AugTurn(3, "search", 1.5, 4), AugTurn(2, "calc", 0.25, 1), AugTurn(2))
    req = ReplicaRequest(RequestHeader("r", "m"), [1, 2], SamplingSpec(max_tokens=7), augmentation=turns)
    out = [d async for d in run_augmented(engine, req, clock=clock, sleep=sleep,
                                          on_pause=pauses.append)]
    assert [r.sampling.max_tokens for r in engine.requests] == [3, 2, 2]
    assert all(r.sampling.ignore_eos and r.sampling.min_tokens == r.sampling.max_tokens
               for r in engine.requests)
    # each turn is a new engine request on prompt + generated + tool tokens ("discard")
    assert engine.requests[1].prompt_token_ids == [1, 2, 900, 901, 902] + filler_tokens("r", 0, 4)
    assert len(engine.requests[2].prompt_token_ids) == 2 + 3 + 4 + 2 + 1
    assert [r.request_id for r in engine.requests] == ["r-t0", "r-t1", "r-t2"]
    assert slept == [1.5, 0.25] and pauses == [True, False, True, False]
    tokens = [d for d in out if d.token_ids]
    assert [d.turn for d in tokens] == [0, 0, 0, 1, 1, 2, 2]
    assert all(d.finish_reason is None for d in out[:-1]) and out[-1].finish_reason == "length"
    events = [d.info["api_call"]["name"] for d in out if d.info and "api_call" in d.info]
    assert events == ["search", "calc"]
    timings = out[-1].info["turns"]
    assert [t["generated_tokens"] for t in timings] == [3, 2, 2]
    assert [t["api_wait_s"] for t in timings] == [1.5, 0.25, 0.0]
    assert all(d.num_prompt_tokens == 2 for d in out)


def test_filler_is_deterministic_and_in_range():
    assert filler_tokens("a", 1, 5) == filler_tokens("a", 1, 5) != filler_tokens("a", 2, 5)
    assert all(100 <= t < 356 for t in filler_tokens("x", 0, 300))


def test_coalescing_never_merges_across_turns_or_events():
    ds = [TokenDelta("a", [1], turn=0), TokenDelta("b", [2], turn=0),
          TokenDelta("", [], turn=0, info={"api_call": {}}), TokenDelta("c", [3], turn=1),
          TokenDelta("d", [4], turn=1)]
    runs = merge_runs(ds)
    assert [(r.text, r.turn, bool(r.info)) for r in runs] == [("ab", 0, False), ("", 0, True),
                                                              ("cd", 1, False)]


def body(aug, **kw):
    return {"model": "m", "prompt": "x", "augmentation": aug, **kw}


@pytest.mark.parametrize("aug, param", [
    ([], "augmentation"),
    ([{"generate_tokens": 0}], "augmentation.0.generate_tokens"),
    ([{"generate_tokens": 5, "api_name": "a"}], "augmentation.0"),
    ([{"generate_tokens": 5, "api_name": "a", "api_duration_s": -1, "api_tokens": 3}],
     "augmentation.0.api_duration_s"),
    ([{"generate_tokens": 5, "api_name": "a", "api_duration_s": 1e6, "api_tokens": 3}],
     "augmentation.0.api_duration_s"),
    ([{"generate_tokens": 5, "api_name": "a", "api_duration_s": 1, "api_tokens": 10**6}],
     "augmentation.0.api_tokens"),
    ([{"generate_tokens": 5}] * 65, "augmentation"),
    ([{"generate_tokens": 5, "surprise": 1}], "augmentation.0.surprise"),
])
def test_augmentation_validation(aug, param):
    with pytest.raises(InvalidRequestError) as err:
        parse_request(CompletionRequest, body(aug))
    assert err.value.param == param


def test_augmentation_context_check():
    req = parse_request(CompletionRequest, body([
        {"generate_tokens": 100, "api_name": "a", "api_duration_s": 0.1, "api_tokens": 50},
        {"generate_tokens": 100}]))
    assert len(augmentation_turns(req, 10, 1000)) == 2
    with pytest.raises(InvalidRequestError) as err:
        augmentation_turns(req, 800, 1000)
    assert err.value.param == "augmentation" and err.value.code == "context_length_exceeded"


async def test_cancellation_during_a_tool_wait_keeps_the_pause_count_balanced():
    import asyncio

    engine, pauses = FakeEngine(), []
    req = ReplicaRequest(RequestHeader("r", "m"), [1], SamplingSpec(max_tokens=3),
                         augmentation=(AugTurn(2, "slow", 60.0, 1), AugTurn(1)))
    gen = run_augmented(engine, req, on_pause=pauses.append)

    async def consume():
        async for _ in gen:
            pass

    task = asyncio.ensure_future(consume())
    for _ in range(50):  # until the tool wait has begun
        await asyncio.sleep(0)
        if pauses:
            break
    assert pauses == [True]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pauses == [True, False]


async def test_preserve_resumes_the_session_with_only_the_new_tokens():
    clock = FakeClock()

    async def sleep(s):
        clock.advance(s)

    engine = FakeEngine()
    turns = (AugTurn(3, "calc", 0.01, 4), AugTurn(2, "chat", 30.0, 2), AugTurn(2))
    req = ReplicaRequest(RequestHeader("r", "m"), [1, 2], SamplingSpec(max_tokens=7), augmentation=turns)
    out = [d async for d in run_augmented(engine, req, policy="lamps-oracle", clock=clock,
                                          sleep=sleep)]
    timings = out[-1].info["turns"]
    # 0.01 s call: keeping 5 tokens is cheaper than recomputing them; 30 s: it is not
    assert [t["strategy"] for t in timings] == ["preserve", "discard", None]
    first, second = engine.sessions
    # the preserved session got the last sampled token again plus the tool's tokens
    assert first.chunks == [[1, 2], [702] + filler_tokens("r", 0, 4)]
    assert first.closed and second.closed
    # after the discard, a new session on the whole history
    assert second.chunks == [[1, 2, 700, 701, 702] + filler_tokens("r", 0, 4) + [700, 701]
                             + filler_tokens("r", 1, 2)]
    assert [t["resumed_preserved"] for t in timings] == [False, True, False]
    events = [d.info["api_call"]["strategy"] for d in out if d.info and "api_call" in d.info]
    assert events == ["preserve", "discard"]


async def test_a_demoted_session_resumes_as_a_new_one():
    clock, budget = FakeClock(), PauseBudget(3, 0.85)

    async def sleep(s):
        for victim in budget.to_demote(kv_usage=0.99, now_s=clock()):  # KV pressure mid-call
            await victim.demote()
        clock.advance(s)

    engine = FakeEngine()
    req = ReplicaRequest(RequestHeader("r", "m"), [1, 2], SamplingSpec(max_tokens=5),
                         augmentation=(AugTurn(3, "calc", 0.01, 1), AugTurn(2)))
    out = [d async for d in run_augmented(engine, req, policy="lamps-oracle", clock=clock,
                                          sleep=sleep, budget=budget)]
    timings = out[-1].info["turns"]
    assert timings[0]["strategy"] == "preserve" and timings[0]["demoted"] is True
    assert budget.num_demotions == 1 and len(budget) == 0
    assert len(engine.sessions) == 2 and engine.sessions[0].closed
    assert engine.sessions[1].chunks == [[1, 2, 700, 701, 702] + filler_tokens("r", 0, 1)]
    assert timings[1]["resumed_preserved"] is False
