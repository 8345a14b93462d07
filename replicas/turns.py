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
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from predictor_service.types import Prediction
from replicas.augmented import filler_tokens
from replicas.engine import EngineSession, ReplicaEngine
from replicas.pause_budget import PauseBudget, PausedSession
from replicas.policy import BatchLoad, Outlook, ReplicaPolicy, ReplicaProfile, Strategy
from replicas.tool_calls import ToolCallParser
from replicas.tools import ToolCall, ToolExecutor, ToolResult
from replicas.turn_plan import TurnPlan, predicted_outlook
from replicas.types import AugTurn, ReplicaRequest, SamplingSpec, TokenDelta

__all__ = ["Flow", "Predict", "TurnCounters", "TurnRunner", "outlook_extra", "predicted_outlook"]

Predict = Callable[[ReplicaRequest, list[int], AugTurn], Awaitable[Prediction | None]]
Tokenize = Callable[[str], list[int]]


def outlook_extra(o: Outlook) -> dict[str, Any]:
    return {"augserve": dataclasses.asdict(o)}


@dataclasses.dataclass(slots=True)
class TurnCounters:
    calls_by_strategy: Counter[str] = dataclasses.field(default_factory=Counter)
    recomputed_tokens: int = 0
    num_tool_errors: int = 0


class TurnRunner:
    def __init__(self, engine: ReplicaEngine, policy: ReplicaPolicy, *,
                 profile: Callable[[], ReplicaProfile], load: Callable[[], BatchLoad],
                 kv_usage: Callable[[], float], budget: PauseBudget,
                 tools: ToolExecutor | None = None, tokenize: Tokenize | None = None,
                 predict: Predict | None = None, parser: ToolCallParser | None = None,
                 max_tool_rounds: int = 8, max_model_len: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                 on_pause: Callable[[bool], None] = lambda paused: None) -> None:
        self.engine, self.policy, self.budget = engine, policy, budget
        self._profile, self._load, self._kv_usage = profile, load, kv_usage
        self.tools, self._tokenize, self._predict = tools, tokenize, predict
        self.parser, self.max_tool_rounds = parser, max_tool_rounds
        self.max_model_len = max_model_len
        self._clock, self._sleep, self._on_pause = clock, sleep, on_pause
        self.counters = TurnCounters()

    async def _outlook(self, request: ReplicaRequest, index: int, flow: Flow) -> Outlook:
        turns = request.augmentation or ()
        pred = request.prediction
        if not self.policy.oracle and index > 0 and self._predict is not None:
            pred = await self._predict(request, flow.history, turns[index]) or pred
        return flow.plan.outlook(turns, index, pred)

    async def run_tools(self, request: ReplicaRequest) -> AsyncIterator[TokenDelta]:
        """A request offering registered tools: each turn stops on ``</tool_call>``; the
        calls it wrote run through the executor, their results enter the context, and
        generation resumes under the policy's strategy, up to ``max_tool_rounds`` calls
        and the request's ``max_tokens`` over all turns."""
        assert self.parser is not None, "no tool-call parser"
        end_id = self.parser.end_id
        flow = self.flow(request)
        remaining = request.sampling.max_tokens
        pred = request.prediction
        # what the policy expects after each turn: a call of the first offered tool
        expected = AugTurn(0, request.tool_names[0] if request.tool_names else None)
        try:
            for index in range(self.max_tool_rounds + 1):
                if index > 0 and self._predict is not None:
                    pred = await self._predict(request, flow.history, expected) or pred
                outlook = predicted_outlook(len(flow.history), pred, expected)
                sampling = dataclasses.replace(
                    request.sampling, max_tokens=remaining,
                    min_tokens=min(request.sampling.min_tokens, remaining),
                    stop_token_ids=tuple(request.sampling.stop_token_ids) + (end_id,))
                async for delta in flow.turn(index, sampling, outlook):
                    yield delta
                remaining -= len(flow.generated)
                if (flow.exhausted or flow.stop_reason != end_id or remaining <= 0
                        or index == self.max_tool_rounds):
                    break
                calls = self.parser.parse(flow.history, f"{request.request_id}-{index}")
                if not calls:
                    break
                yield await flow.pause(outlook, ",".join(c.name for c in calls),
                                       {"calls": [{"name": c.name, "arguments": c.arguments}
                                                  for c in calls]})
                flow.resume(await self._run_calls(request, calls, flow.record))
        finally:
            await flow.close()
        yield flow.last_delta()

    async def _run_calls(self, request: ReplicaRequest, calls: list[ToolCall],
                         record: dict[str, Any]) -> list[int]:
        from replicas.tool_calls import response_text
        assert self.tools is not None and self._tokenize is not None
        self._on_pause(True)
        started = self._clock()
        try:
            results = []
            for call in calls:
                if call.name not in request.tool_names:  # the model made it up
                    error = f"tool {call.name!r} is not available to this request"
                    results.append(ToolResult(call.call_id, call.name, json.dumps({"error": error}),
                                              False, error, 0.0))
                    continue
                results.append(await self.tools.call(call))
            errors = [r.error for r in results if not r.ok]
            self.counters.num_tool_errors += len(errors)
            record["tool_error"] = "; ".join(e for e in errors if e) or None
            return self._tokenize(response_text(results))
        finally:
            record["api_wait_s"] = self._clock() - started
            self._on_pause(False)

    def flow(self, request: ReplicaRequest) -> Flow:
        return Flow(self, request)

    async def run(self, request: ReplicaRequest) -> AsyncIterator[TokenDelta]:
        """Every turn of ``request.augmentation``: token deltas tagged with their turn, an
        ``api_call`` event before each call, a last delta with the per-turn timings."""
        assert request.augmentation, "not an augmented request"
        turns = request.augmentation
        flow = self.flow(request)
        try:
            for index, turn in enumerate(turns):
                outlook = await self._outlook(request, index, flow)
                sampling = dataclasses.replace(
                    request.sampling, max_tokens=turn.generate_tokens,
                    min_tokens=turn.generate_tokens, ignore_eos=True, stop=())
                async for delta in flow.turn(index, sampling, outlook):
                    yield delta
                if flow.exhausted:
                    break
                if turn.api_name is not None:
                    yield await flow.pause(outlook, turn.api_name,
                                           {"duration_s": turn.api_duration_s,
                                            "tokens": turn.api_tokens})
                    result = await self._call_api(request, index, turn, flow.record)
                    flow.resume(result)
        finally:
            await flow.close()
        yield flow.last_delta()

    def _choose(self, plan: TurnPlan, outlook: Outlook,
                session: EngineSession | None) -> Strategy:
        can_preserve = (session is not None and not getattr(session, "closed", False)
                        and self.budget.can_preserve(self._kv_usage()))
        return plan.choose(outlook, self._profile(), self._load(), can_preserve)

    async def _call_api(self, request: ReplicaRequest, index: int, turn: AugTurn,
                        record: dict[str, Any]) -> list[int]:
        """Run the call; returns the tokens it puts into the context (``record`` gets its
        duration and any error)."""
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
            return tokens
        finally:
            record["api_wait_s"] = self._clock() - started
            self._on_pause(False)


class Flow:
    """One request's turns on the engine: the history, the session that may hold its KV,
    and the per-turn records.  ``turn`` → (``pause`` → the call → ``resume``)* → ``close``."""

    def __init__(self, runner: TurnRunner, request: ReplicaRequest) -> None:
        self.runner, self.request = runner, request
        self.history = list(request.prompt_token_ids)
        self.num_prompt = len(self.history)
        self.plan = TurnPlan(runner.policy, len(self.history))
        self.timings: list[dict[str, Any]] = []
        self.record: dict[str, Any] = {}
        self.generated: list[int] = []
        self.finish_reason: str | None = None
        self.stop_reason: int | str | None = None
        self.session: EngineSession | None = None
        self._resume: list[int] | None = None  # tokens to send into a preserved session
        self._paused: PausedSession | None = None
        self.exhausted = False
        self.index = 0

    def _stream(self, index: int, sampling: SamplingSpec,
                extra: dict[str, Any]) -> tuple[AsyncIterator[TokenDelta], bool]:
        r, rid = self.runner, f"{self.request.request_id}-t{index}"
        if self._resume is not None and self.session is not None:
            return self.session.turn(self._resume, sampling, extra), True
        if self.plan.may_preserve and not sampling.stop:  # sessions refuse stop strings
            self.session = r.engine.open_session(rid, self.request.priority)
            return self.session.turn(self.history, sampling, extra), False
        sub = dataclasses.replace(
            self.request, header=dataclasses.replace(self.request.header, request_id=rid),
            prompt_token_ids=list(self.history), sampling=sampling, augmentation=None,
            tool_names=())
        return r.engine.generate(sub, extra), False

    async def turn(self, index: int, sampling: SamplingSpec,
                   outlook: Outlook) -> AsyncIterator[TokenDelta]:
        """One turn; none when the context is full (``exhausted``: the request ends with
        ``length``), a shorter one when only part of ``max_tokens`` fits."""
        r = self.runner
        room = (r.max_model_len - len(self.history)) if r.max_model_len else sampling.max_tokens
        if room <= 0:
            self.exhausted, self.finish_reason = True, "length"
            return
        if room < sampling.max_tokens:
            sampling = dataclasses.replace(sampling, max_tokens=room,
                                           min_tokens=min(sampling.min_tokens, room))
        self.index = index
        if self._resume is None and self.session is not None:
            await self.session.close()
            self.session = None
        stream, preserved = self._stream(index, sampling, outlook_extra(outlook))
        submitted, first, generated, cached = r._clock(), None, [], 0
        self.stop_reason = None
        async for delta in stream:
            if first is None and delta.token_ids:
                first = r._clock()
            generated += delta.token_ids
            if delta.finish_reason is not None:
                self.finish_reason, self.stop_reason = delta.finish_reason, delta.stop_reason
            cached = max(cached, delta.num_cached_tokens)
            delta.finish_reason, delta.num_prompt_tokens, delta.turn = None, self.num_prompt, index
            yield delta
        assert preserved == self.plan.resumes_preserved, "the plan and the session disagree"
        recomputed = self.plan.turn_done(index, len(generated), cached)
        r.counters.recomputed_tokens += recomputed
        ended = r._clock()
        self.record = {
            "turn": index, "context_tokens": len(self.history),
            "generated_tokens": len(generated), "cached_tokens": cached,
            "recomputed_tokens": recomputed, "resumed_preserved": preserved,
            "first_token_s": (first or ended) - submitted,
            "generation_s": ended - (first or ended), "api_name": None,
            "api_wait_s": 0.0, "strategy": None}
        self.timings.append(self.record)
        self.history += generated
        self.generated = generated
        self._resume = None

    async def pause(self, outlook: Outlook, api_name: str, info: dict[str, Any]) -> TokenDelta:
        """Choose the strategy for the call after this turn and apply it; returns the
        ``api_call`` event to stream before the call runs."""
        r = self.runner
        strategy = r._choose(self.plan, outlook, self.session)
        self.record["strategy"], self.record["api_name"] = strategy.value, api_name
        r.counters.calls_by_strategy[strategy.value] += 1
        if strategy is Strategy.PRESERVE and self.session is not None:
            self._paused = PausedSession(self.request.request_id, len(self.history),
                                         r._clock() + (outlook.api_s or 0.0), self.session.close)
            r.budget.hold(self._paused)
        elif self.session is not None:
            await self.session.close()
            self.session = None
        return TokenDelta(text="", token_ids=[], num_prompt_tokens=self.num_prompt, turn=self.index,
                          info={"api_call": {"turn": self.index, "name": api_name, **info,
                                             "strategy": strategy.value}})

    def resume(self, result: list[int]) -> None:
        """The call returned ``result`` tokens: the next turn resumes the preserved session
        (unless the budget demoted it) or starts anew on the whole history."""
        paused, self._paused = self._paused, None
        demoted = False
        if paused is not None:
            self.runner.budget.release(self.request.request_id)
            demoted = paused.demoted
            if demoted:
                self.record["demoted"] = True
                self.session = None
            else:
                self._resume = self.generated[-1:] + result
        self.plan.resume(len(result), demoted or paused is None)
        self.history += result

    async def close(self) -> None:
        self.runner.budget.release(self.request.request_id)
        if self.session is not None:
            await self.session.close()
            self.session = None

    def last_delta(self) -> TokenDelta:
        return TokenDelta(text="", token_ids=[], finish_reason=self.finish_reason or "length",
                          num_prompt_tokens=self.num_prompt, turn=self.index,
                          info={"turns": self.timings})
