"""Running a request as turns separated by API calls, under the replica's policy.

At each call the policy picks what happens to the KV cache (ALGORITHMS.md):
* **preserve** — the turns run in one streaming-input session (:class:`EngineSession`);
  its KV stays while the API runs and the next turn computes only the new tokens (the
  pause budget may demote it to discard meanwhile);
* **discard** — the session (or request) ends and the next turn is a new one on the whole
  history; only the prefix cache may spare recomputation;
* **swap** — needs the KV offloading connector (GPU); never chosen where unsupported.

Each turn carries the policy's outlook of the request in ``extra_args`` so that the
engine's scheduler can rank it (oracle policies read the benchmark annotation's true
values; the others the predictor's estimates, asked again at every resume).  API calls run
through the tool executor when the name is a registered tool, else as emulated calls with
the annotation's duration and filler tokens."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from predictor_service.types import Prediction
from replicas.augmented import filler_tokens
from replicas.engine import EngineSession, ReplicaEngine
from replicas.pause_budget import PauseBudget, PausedSession
from replicas.policy import BatchLoad, Outlook, Pause, ReplicaPolicy, ReplicaProfile, Strategy
from replicas.tools import ToolCall, ToolExecutor
from replicas.types import AugTurn, ReplicaRequest, TokenDelta

#: Duration assumed for an API the predictor has no estimate of (its own prior).
DEFAULT_API_S = 5.0

Predict = Callable[[ReplicaRequest, list[int], AugTurn], Awaitable[Prediction | None]]
Tokenize = Callable[[str], list[int]]


def outlook_extra(o: Outlook) -> dict[str, Any]:
    return {"augserve": dataclasses.asdict(o)}


def predicted_outlook(context_tokens: int, pred: Prediction | None, turn: AugTurn | None,
                      ) -> Outlook:
    """The outlook from a prediction (or the client's fallback numbers without one)."""
    output = pred.output_tokens if pred is not None else 128.0
    api_s = None
    if turn is not None and turn.api_name is not None:
        durations = {d.name: d.mean_s for d in (pred.api_durations if pred else ())}
        api_s = durations.get(turn.api_name, DEFAULT_API_S)
    return Outlook(context_tokens, output, api_s, 0, output if api_s is not None else 0.0)


def oracle_outlook(context_tokens: int, turns: tuple[AugTurn, ...], index: int) -> Outlook:
    t = turns[index]
    after = float(sum(x.generate_tokens for x in turns[index + 1:]))
    return Outlook(context_tokens, float(t.generate_tokens),
                   t.api_duration_s if t.api_name else None, t.api_tokens, after)


@dataclasses.dataclass(slots=True)
class TurnCounters:
    calls_by_strategy: Counter[str] = dataclasses.field(default_factory=Counter)
    recomputed_tokens: int = 0
    swapped_bytes: int = 0
    num_tool_errors: int = 0


class TurnRunner:
    def __init__(self, engine: ReplicaEngine, policy: ReplicaPolicy, *,
                 profile: Callable[[], ReplicaProfile], load: Callable[[], BatchLoad],
                 kv_usage: Callable[[], float], budget: PauseBudget,
                 tools: ToolExecutor | None = None, tokenize: Tokenize | None = None,
                 predict: Predict | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 on_pause: Callable[[bool], None] = lambda paused: None) -> None:
        self.engine, self.policy, self.budget = engine, policy, budget
        self._profile, self._load, self._kv_usage = profile, load, kv_usage
        self.tools, self._tokenize, self._predict = tools, tokenize, predict
        self._clock, self._sleep, self._on_pause = clock, sleep, on_pause
        self.counters = TurnCounters()

    @property
    def may_preserve(self) -> bool:
        return self.policy.waste is not None and Strategy.PRESERVE in self.policy.allowed

    async def _outlook(self, request: ReplicaRequest, index: int, history: list[int]) -> Outlook:
        turns = request.augmentation or ()
        if self.policy.oracle:
            return oracle_outlook(len(history), turns, index)
        pred = request.prediction
        if index > 0 and self._predict is not None:
            pred = await self._predict(request, history, turns[index]) or pred
        return predicted_outlook(len(history), pred, turns[index])

    async def run(self, request: ReplicaRequest) -> AsyncIterator[TokenDelta]:
        """Every turn of ``request.augmentation``: token deltas tagged with their turn, an
        ``api_call`` event before each call, a last delta with the per-turn timings."""
        assert request.augmentation, "not an augmented request"
        turns = request.augmentation
        history = list(request.prompt_token_ids)
        num_prompt = len(history)
        timings: list[dict[str, Any]] = []
        finish_reason: str | None = None
        session: EngineSession | None = None
        resume: list[int] | None = None  # tokens to send into a preserved session
        try:
            for index, turn in enumerate(turns):
                outlook = await self._outlook(request, index, history)
                sampling = dataclasses.replace(
                    request.sampling, max_tokens=turn.generate_tokens,
                    min_tokens=turn.generate_tokens, ignore_eos=True, stop=())
                extra = outlook_extra(outlook)
                if resume is not None and session is not None:
                    stream = session.turn(resume, sampling, extra)
                    preserved = True
                else:
                    preserved = False
                    if session is not None:
                        await session.close()
                        session = None
                    if self.may_preserve:
                        session = self.engine.open_session(f"{request.request_id}-t{index}",
                                                           request.priority)
                        stream = session.turn(history, sampling, extra)
                    else:
                        sub = dataclasses.replace(
                            request, request_id=f"{request.request_id}-t{index}",
                            prompt_token_ids=list(history), sampling=sampling, augmentation=None)
                        stream = self.engine.generate(sub, extra)
                submitted, first, generated, cached = self._clock(), None, [], 0
                async for delta in stream:
                    if first is None and delta.token_ids:
                        first = self._clock()
                    generated += delta.token_ids
                    finish_reason = delta.finish_reason or finish_reason
                    cached = max(cached, delta.num_cached_tokens)
                    delta.finish_reason, delta.num_prompt_tokens, delta.turn = None, num_prompt, index
                    yield delta
                recomputed = 0 if preserved or index == 0 else max(len(history) - cached, 0)
                self.counters.recomputed_tokens += recomputed
                ended = self._clock()
                record: dict[str, Any] = {
                    "turn": index, "context_tokens": len(history),
                    "generated_tokens": len(generated), "cached_tokens": cached,
                    "recomputed_tokens": recomputed, "resumed_preserved": preserved,
                    "first_token_s": (first or ended) - submitted,
                    "generation_s": ended - (first or ended), "api_name": turn.api_name,
                    "api_wait_s": 0.0, "strategy": None}
                history += generated
                resume = None
                if turn.api_name is not None:
                    strategy = self._choose(history, outlook, session)
                    record["strategy"] = strategy.value
                    self.counters.calls_by_strategy[strategy.value] += 1
                    paused: PausedSession | None = None
                    if strategy is Strategy.PRESERVE and session is not None:
                        paused = PausedSession(request.request_id, len(history),
                                               self._clock() + (outlook.api_s or 0.0), session.close)
                        self.budget.hold(paused)
                    elif session is not None:
                        await session.close()
                        session = None
                    yield TokenDelta(text="", token_ids=[], num_prompt_tokens=num_prompt, turn=index,
                                     info={"api_call": {"turn": index, "name": turn.api_name,
                                                        "duration_s": turn.api_duration_s,
                                                        "tokens": turn.api_tokens,
                                                        "strategy": strategy.value}})
                    result, record["api_wait_s"] = await self._call_api(request, index, turn, record)
                    if paused is not None:
                        self.budget.release(request.request_id)
                        if paused.demoted:
                            record["demoted"] = True
                            session = None
                        else:
                            resume = generated[-1:] + result
                    history += result
                timings.append(record)
        finally:
            self.budget.release(request.request_id)
            if session is not None:
                await session.close()
        yield TokenDelta(text="", token_ids=[], finish_reason=finish_reason or "length",
                         num_prompt_tokens=num_prompt, turn=len(turns) - 1,
                         info={"turns": timings})

    def _choose(self, history: list[int], outlook: Outlook,
                session: EngineSession | None) -> Strategy:
        can_preserve = session is not None and self.budget.can_preserve(self._kv_usage())
        pause = Pause(len(history), outlook.api_s if outlook.api_s is not None else DEFAULT_API_S)
        return self.policy.strategy(pause, self._profile(), self._load(), can_preserve)

    async def _call_api(self, request: ReplicaRequest, index: int, turn: AugTurn,
                        record: dict[str, Any]) -> tuple[list[int], float]:
        """Run the call; returns the tokens it puts into the context and its duration."""
        assert turn.api_name is not None
        self._on_pause(True)
        started = self._clock()
        try:
            if self.tools is not None and turn.api_name in self.tools.names:
                res = await self.tools.call(
                    ToolCall(turn.api_name, {}, f"{request.request_id}-{index}"),
                    emulated_duration_s=turn.api_duration_s)
                self.counters.num_tool_errors += 0 if res.ok else 1
                record["tool_error"] = res.error
                wrapped = f"<tool_response>\n{res.content}\n</tool_response>"
                tokens = (self._tokenize(wrapped) if self._tokenize is not None
                          else filler_tokens(request.request_id, index, turn.api_tokens))
            else:
                await self._sleep(turn.api_duration_s)
                tokens = filler_tokens(request.request_id, index, turn.api_tokens)
            return tokens, self._clock() - started
        finally:
            self._on_pause(False)
