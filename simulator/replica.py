"""One simulated replica: the engine model driven in simulated time, with the replica's
own policy code — the :class:`WaitingRanker` inside the engine model, a
:class:`~replicas.turn_plan.TurnPlan` per request for the per-turn decisions, the
:class:`~replicas.pause_budget.PauseBudget` and its starvation rule, the throughput window
the queue manager reads.

A request runs as turns (:mod:`replicas.turns` on the real engine); a turn that names
an API calls it, the last turn too (the request ends when that call returns, as the real
turn runner does):

- a policy that may preserve runs the request as one streaming session; at each call
  ``TurnPlan.choose`` picks the strategy (preserve only while the budget allows);
- **preserve**: the session pauses holding its blocks and a slot, the budget may demote
  it meanwhile (then the next turn starts anew);
- **discard**: blocks freed (they stay in the prefix cache until evicted); the next turn
  is a new engine request over the whole history;
- **swap**: as discard, plus the context's KV copied out (``swap_s_per_token`` per token,
  stalling the engine's next step) into the CPU pool and copied back in when the next turn
  is admitted (stalling that step); the CPU pool's size bounds what is swapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from predictor_service.types import Prediction
from replicas.augmented import filler_tokens
from replicas.engine_stats import ThroughputWindow
from replicas.pause_budget import PauseBudget, PausedSession, is_starved
from replicas.policy import ReplicaPolicy, ReplicaProfile, Strategy, make_policy
from replicas.policy.ranking import WaitingRanker
from replicas.stats_report import PolicyCounters, ReplicaReportInputs, replica_stats
from replicas.turn_plan import TurnPlan, predicted_outlook
from replicas.types import AugTurn, ReplicaLimits, ReplicaStats
from simulator.cost import StepCost
from simulator.engine import (
    DecodeRun,
    EngineLimits,
    EngineModel,
    EngineRequest,
    SeqStatus,
    StepResult,
    TokenCounter,
)
from simulator.events import EventLoop, Phase
from simulator.kv import KvCache
from simulator.shared_cpu import CpuPool


@dataclass(frozen=True, slots=True)
class ReplicaSetup:
    """Everything a simulated replica is built from (config and profile resolved)."""

    replica_id: str
    deployment: str
    gpu_class: str
    model: str
    policy: str
    limits: EngineLimits
    num_blocks: int
    block_size: int
    enable_prefix_caching: bool
    max_waiting_requests: int
    cost: StepCost
    #: Host time added to every step (the profile's ``host_ms_per_step``), s.
    host_s_per_step: float
    #: What the replica's policies believe of its speed (the profile's a, c, S, swap).
    profile: ReplicaProfile
    swap_s_per_token: float | None
    cpu_swap_tokens: int
    rerank_every_steps: int
    starvation_threshold_steps: int | None
    pause_kv_watermark: float
    reserved_slots: int
    budget_check_s: float
    live_profile: bool
    #: Decode runs computed in O(1) per step (:mod:`simulator.engine`); False steps every
    #: request one by one (same outputs, slower).
    fast_decode: bool = True


@dataclass(slots=True)
class SimCall:
    """One client request on a replica."""

    request_id: str
    prompt_token_ids: list[int]
    turns: tuple[AugTurn, ...]
    priority: int
    arrival_s: float
    prediction: Prediction | None
    #: Called as (call, now) when the request ends.
    on_done: Callable[[SimCall, float], None]
    #: Called before turns after the first: the prediction for (call, turn index, context).
    repredict: Callable[[SimCall, int, list[int]], Prediction | None] | None = None
    history: list[int] = field(default_factory=list)
    plan: TurnPlan | None = None
    seq: EngineRequest | None = None
    index: int = 0
    output_tokens: int = 0
    turn_tokens: list[int] = field(default_factory=list)
    first_token_s: float | None = None
    started: bool = False
    swapped_tokens: int = 0
    api_wait_s: list[float] = field(default_factory=list)


async def _never() -> None:  # PausedSession.demote: the simulator demotes by itself
    return None


class SimReplica:
    def __init__(self, setup: ReplicaSetup, loop: EventLoop, cpu: CpuPool | None = None) -> None:
        self.setup = setup
        self.loop = loop
        #: The cores this replica's engine shares with others' (None: its own accelerator).
        self.cpu = cpu
        self.policy: ReplicaPolicy = make_policy(setup.policy)
        self.profile = setup.profile
        ranker: WaitingRanker[EngineRequest] = WaitingRanker(
            lambda r: r.outlook, self.policy, setup.profile,
            starvation_threshold_steps=setup.starvation_threshold_steps,
            rerank_every_steps=setup.rerank_every_steps, live_profile=setup.live_profile)
        self.kv = KvCache(setup.num_blocks, setup.block_size,
                          enable_prefix_caching=setup.enable_prefix_caching)
        self.engine = EngineModel(setup.limits, self.kv, ranker, TokenCounter(),
                                  fast_decode=setup.fast_decode)
        self.budget = PauseBudget(setup.limits.max_num_seqs - setup.reserved_slots,
                                  setup.pause_kv_watermark)
        self.throughput = ThroughputWindow()
        self.calls: dict[str, SimCall] = {}
        self._by_seq: dict[str, SimCall] = {}
        self._stepping = False
        self._budget_pending = False
        self._stall_s = 0.0
        self._last_budget_s = -1e18
        self._swap_used_tokens = 0
        self.num_output_tokens = 0
        self.num_paused_calls = 0
        self.recomputed_tokens = 0
        self.swapped_tokens = 0
        self.calls_by_strategy: dict[str, int] = {s.value: 0 for s in Strategy}
        self.busy_s = 0.0
        self.num_steps = 0
        #: The decode run whose steps are being delivered (their tokens not yet counted
        #: per call).
        self._delivering: DecodeRun | None = None

    @property
    def replica_id(self) -> str:
        return self.setup.replica_id

    # ---- requests in -------------------------------------------------------------------
    def submit(self, call: SimCall) -> None:
        call.history = list(call.prompt_token_ids)
        call.plan = TurnPlan(self.policy, len(call.history))
        self.calls[call.request_id] = call
        self._start_turn(call, 0, call.prediction)

    def evict(self, request_id: str) -> bool:
        """Take back a request that has not started; True if it was taken."""
        call = self.calls.get(request_id)
        if call is None or call.started:
            return False
        if call.seq is not None:
            self.engine.close(call.seq)
            self._by_seq.pop(call.seq.request_id, None)
        del self.calls[request_id]
        return True

    def _start_turn(self, call: SimCall, index: int, prediction: Prediction | None) -> None:
        assert call.plan is not None
        turn = call.turns[index]
        call.index = index
        outlook = call.plan.outlook(call.turns, index, prediction)
        if not self.policy.ranks and not self.policy.oracle:
            outlook = predicted_outlook(len(call.history), prediction, turn)
        seq = call.seq
        if call.plan.resumes_preserved and seq is not None and seq.status is SeqStatus.PAUSED:
            seq.outlook = outlook
            result = call.history[len(call.history) - call.plan.fresh_tokens + 1:]
            self.engine.resume(seq, result, turn.generate_tokens, arrival_time=self.loop.now_s)
        else:
            seq = EngineRequest(
                f"{call.request_id}-t{index}", list(call.history), priority=call.priority,
                arrival_time=self.loop.now_s, max_tokens=turn.generate_tokens,
                session=call.plan.may_preserve, outlook=outlook,
                swapped_in_tokens=call.swapped_tokens)
            call.swapped_tokens = 0
            call.seq = seq
            self._by_seq[seq.request_id] = call
            self.engine.add(seq)
        self._wake()

    # ---- the engine's steps ------------------------------------------------------------
    def _wake(self) -> None:
        if self._stepping or not self.engine.has_work():
            return
        out = self.engine.step()
        self.num_steps += 1
        if not out.shape.num_seqs:
            # nothing fits now: an arrival, a resume or a release wakes it again — and the
            # pause budget's own loop keeps checking, as the replica's does every period
            if len(self.budget) and not self._budget_pending:
                self._budget_pending = True
                self.loop.at(self.loop.now_s + self.setup.budget_check_s, Phase.STEP_END,
                             self._budget_tick)
            return
        self._stepping = True
        swap_s = out.swap_in_tokens * (self.setup.swap_s_per_token or 0.0)
        stretch = self.cpu.begin_step() if self.cpu is not None else 1.0
        step_ms = self.setup.cost.step_ms(out.shape) * stretch
        duration_s = (step_ms / 1000.0 + self.setup.host_s_per_step * stretch + self._stall_s
                      + swap_s)
        self._stall_s = 0.0
        self.busy_s += duration_s
        self.engine.ranker.record_step(out.shape.num_tokens, step_ms)
        self.loop.at(self.loop.now_s + duration_s, Phase.STEP_END, lambda: self._step_end(out))

    def _step_end(self, out: StepResult) -> None:
        now = self.loop.now_s
        self._stepping = False
        if self.cpu is not None:
            self.cpu.end_step()
        if out.run is not None:  # a decode-run step: each of its requests sampled a token
            if out.run is not self._delivering:
                self._flush_run()
                self._delivering = out.run
            out.run.num_delivered += 1
            self.num_output_tokens += out.shape.num_seqs
            self.throughput.add(now, out.shape.num_seqs, True)
            self._enforce_budget(now)
            self._wake()
            return
        self._flush_run()
        for seq in out.sampled:
            call = self._by_seq.get(seq.request_id)
            if call is None:
                continue
            call.output_tokens += 1
            self.num_output_tokens += 1
            if call.first_token_s is None:
                call.first_token_s = now
                call.started = True
        self.throughput.add(now, len(out.sampled), True)
        for seq in out.turn_ended:
            call = self._by_seq.get(seq.request_id)
            if call is not None:
                self._turn_ended(call, seq)
        self._enforce_budget(now)
        self._wake()

    def _flush_run(self) -> None:
        """Count the delivered decode-run steps' tokens per call (every request of the
        run had its first token before it began)."""
        run, self._delivering = self._delivering, None
        if run is None:
            return
        for seq in run.requests:
            call = self._by_seq.get(seq.request_id)
            if call is not None:
                call.output_tokens += run.num_delivered

    def _turn_ended(self, call: SimCall, seq: EngineRequest) -> None:
        assert call.plan is not None
        turn = call.turns[call.index]
        generated = seq.num_turn_tokens
        call.turn_tokens.append(generated)
        call.history.extend(seq.token_ids[len(call.history):])
        if seq.dropped_token is not None:
            call.history.append(seq.dropped_token)
        self.recomputed_tokens += call.plan.turn_done(call.index, generated, seq.num_cached_tokens)
        if turn.api_name is None:
            self._finish(call)
            return
        self._pause(call, seq, turn)  # the last turn's call too: the real runner makes it

    def _pause(self, call: SimCall, seq: EngineRequest, turn: AugTurn) -> None:
        assert call.plan is not None
        now = self.loop.now_s
        outlook = seq.outlook or predicted_outlook(len(call.history), call.prediction, turn)
        can_preserve = (seq.status is SeqStatus.PAUSED
                        and self.budget.can_preserve(self.engine.kv_usage()))
        strategy = call.plan.choose(outlook, self._current_profile(), self.engine.batch_load(),
                                    can_preserve)
        if strategy is Strategy.SWAP and (self._swap_used_tokens + len(call.history)
                                          > self.setup.cpu_swap_tokens):
            strategy = call.plan.strategy = Strategy.DISCARD  # the CPU pool is full
        self.calls_by_strategy[strategy.value] += 1
        if strategy is Strategy.PRESERVE:
            api_end = now + (outlook.api_s or 0.0)
            self.budget.hold(PausedSession(call.request_id, len(call.history), api_end, _never))
        else:
            self._release(call)
            if strategy is Strategy.SWAP:
                call.swapped_tokens = len(call.history) - 1
                self._swap_used_tokens += call.swapped_tokens
                self.swapped_tokens += call.swapped_tokens
                self._stall_s += call.swapped_tokens * (self.setup.swap_s_per_token or 0.0)
        self.num_paused_calls += 1
        self.loop.at(now + turn.api_duration_s, Phase.API_DONE,
                     lambda: self._api_done(call, turn))
        self._wake()

    def _release(self, call: SimCall) -> None:
        if call.seq is not None:
            self.engine.close(call.seq)
            self._by_seq.pop(call.seq.request_id, None)
            call.seq = None

    def _api_done(self, call: SimCall, turn: AugTurn) -> None:
        assert call.plan is not None
        self.num_paused_calls -= 1
        call.api_wait_s.append(turn.api_duration_s)
        if call.swapped_tokens:
            self._swap_used_tokens -= call.swapped_tokens
        paused = self.budget.release(call.request_id)
        demoted = paused is None and call.plan.strategy is Strategy.PRESERVE
        result = filler_tokens(call.request_id, call.index, turn.api_tokens)
        call.plan.resume(len(result), demoted)
        call.history.extend(result)
        index = call.index + 1
        if index == len(call.turns):  # a call after the last turn: its return ends the request
            self._finish(call)
            return
        prediction = call.prediction
        if call.repredict is not None and not self.policy.oracle:
            prediction = call.repredict(call, index, call.history) or prediction
        self._start_turn(call, index, prediction)

    def _finish(self, call: SimCall) -> None:
        self._release(call)
        self.budget.release(call.request_id)
        self.calls.pop(call.request_id, None)
        call.on_done(call, self.loop.now_s)
        self._wake()

    def _budget_tick(self) -> None:
        self._budget_pending = False
        self._enforce_budget(self.loop.now_s)
        self._wake()

    def _enforce_budget(self, now: float) -> None:
        if now - self._last_budget_s < self.setup.budget_check_s or not len(self.budget):
            return
        self._last_budget_s = now
        usage = self.engine.kv_usage()
        victims = self.budget.to_demote(usage, now, starved=is_starved(
            self.engine.num_waiting, len(self.engine.running), len(self.budget),
            self.setup.limits.max_num_seqs, usage, self.budget.kv_watermark))
        for v in victims:
            call = self.calls.get(v.request_id)
            if call is not None:
                self._release(call)

    # ---- the report to the queue manager -----------------------------------------------
    def _current_profile(self) -> ReplicaProfile:
        """What the real replica decides its turns with (``ReplicaCore.refresh``): the
        engine's live fit of its own step times once it has one and
        ``scheduling.live_profile`` is on, else the profile."""
        if self.setup.live_profile:
            live = self.engine.ranker.fit.current()
            if live.source == "live":
                self.profile = live
        return self.profile

    def stats(self) -> ReplicaStats:
        self._current_profile()
        engine = self.engine
        counters = PolicyCounters(
            calls_by_strategy=self.calls_by_strategy, num_preserved_paused=len(self.budget),
            num_demotions=self.budget.num_demotions, recomputed_tokens=self.recomputed_tokens,
            num_starvation_promotions=engine.ranker.guard.num_promotions,
            num_preempted_total=engine.num_preemptions, swapped_tokens=self.swapped_tokens)
        return replica_stats(ReplicaReportInputs(
            replica_id=self.replica_id, deployment=self.setup.deployment,
            gpu_class=self.setup.gpu_class, model=self.setup.model,
            limits=ReplicaLimits(self.setup.limits.max_num_seqs, self.setup.max_waiting_requests),
            num_running=len(engine.running), num_waiting=engine.num_waiting,
            active_request_ids=tuple(self.calls),
            unstarted_request_ids=tuple(rid for rid, c in self.calls.items() if not c.started),
            num_paused=self.num_paused_calls, kv_usage=self.engine.kv_usage(),
            output_tokens_per_s=self.throughput.tokens_per_s(),
            num_output_tokens_total=self.num_output_tokens, profile=self.profile,
            counters=counters,
            platform={"num_steps": float(self.num_steps), "busy_s": self.busy_s}),
            self.loop.now_s)
