"""The engine model of one replica: vLLM 0.32's V1 scheduler (``Scheduler.schedule`` in
``vllm/v1/core/sched/scheduler.py``) reduced to what decides who runs, on the KV cache of
:mod:`simulator.kv`, with the replica's waiting order from the shared
:class:`~replicas.policy.ranking.WaitingRanker`.  Line references are to that file.

One :meth:`EngineModel.step`:

1. **Running first, in order** (l. 659–868): each running request gets
   ``num_tokens − num_computed_tokens`` tokens (a decode: 1; a prefill: the rest of its
   prompt), capped by the step's token budget (chunked prefill).  When its blocks do not
   fit, the running request of largest ``(priority, arrival_time)`` is preempted (priority
   policy, l. 797): blocks freed, ``num_computed_tokens = 0``, back to ``waiting``
   (``_preempt_request``, l. 1571–1613), its scheduled tokens returned to the budget; if it was
   the request itself, the running pass stops.
2. **Admission only when nothing was preempted this step** (l. 900).  ``kv_holding_waiting``
   (requests that hold KV: a resumed streaming session) is drained before ``waiting``
   (l. 915); paused sessions there are skipped and put back (l. 904–911); admission stops at
   ``max_num_seqs`` counting paused sessions (l. 923), at the first request whose blocks
   do not fit (l. 1262–1275: the whole sequence must fit, ``scheduler_reserve_full_isl``, and the
   watermark be left when something runs), or when the budget is spent.  A request with
   no computed tokens first looks up the prefix cache (l. 967; ``kv_cache_manager.py`` l. 295).
3. **Outputs**: a request whose computed tokens reach its length samples one token; a
   turn that reaches its ``max_tokens`` ends — a plain request is freed, a streaming
   session pauses holding its blocks and a slot, its last token dropped from the context
   (the next chunk re-sends it, VLLM_NOTES.md).

**Decode runs** (``fast_decode``): when a step admits, preempts and ends nothing, nothing
waits, every running request decodes and the coming steps can neither end a turn nor
run out of blocks, the following steps are computed in O(1) each (their shape: every
running request one token, the context ``R`` tokens longer per step) and applied request
by request only when something reads or changes the engine (:meth:`EngineModel.settle`:
tokens appended, blocks taken and cached in the very order stepping would have, in
(step, running position) order).  Each step is still one event of the loop, so the
event order, and with it every output, is byte-identical to stepping request by request
(tested; ``augserve simulate run --micro-steps`` turns it off).

Not modelled: speculative decoding, KV connectors, encoders, LoRA, async scheduling (the
CPU platform turns it off), ``long_prefill_token_threshold`` (0 by default).
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from replicas.policy import BatchLoad, Outlook
from replicas.policy.ranking import WaitingRanker
from replicas.policy.waiting import RankedQueue
from simulator.cost import StepShape
from simulator.kv import KvCache, KvSeq


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    #: A streaming session between two turns (vLLM's WAITING_FOR_STREAMING_REQ).
    PAUSED = "paused"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class EngineRequest(KvSeq):
    """One engine request (a turn, or a streaming session of several)."""

    priority: int = 0
    arrival_time: float = 0.0
    #: Tokens this turn may generate; the turn ends when it has.
    max_tokens: int = 1
    num_turn_tokens: int = 0
    status: SeqStatus = SeqStatus.WAITING
    session: bool = False
    num_preemptions: int = 0
    #: Tokens it did not compute at its last admission: prefix-cache hits and swapped-in
    #: tokens (vLLM's ``num_cached_tokens`` counts a connector's tokens too).
    num_cached_tokens: int = 0
    outlook: Outlook | None = None
    #: Tokens restored from the CPU swap pool at admission (swap-in), once.
    swapped_in_tokens: int = 0
    #: A paused session's last sampled token, out of the context until it resumes.
    dropped_token: int | None = None


class _Held:
    """A heap entry comparing its request's live (priority, arrival, id), as vLLM's
    ``PriorityRequestQueue`` compares ``Request`` objects (their fields may change while
    they sit in the heap; the heap then keeps the order it had, as vLLM's does)."""

    __slots__ = ("request",)

    def __init__(self, request: EngineRequest) -> None:
        self.request = request

    def __lt__(self, other: _Held) -> bool:
        a, b = self.request, other.request
        return ((a.priority, a.arrival_time, a.request_id, id(a))
                < (b.priority, b.arrival_time, b.request_id, id(b)))


class HoldingQueue:
    """``kv_holding_waiting``: a heap with vLLM's priority queue's operations."""

    def __init__(self) -> None:
        self._heap: list[_Held] = []

    def push(self, request: EngineRequest) -> None:
        heapq.heappush(self._heap, _Held(request))

    def peek(self) -> EngineRequest:
        return self._heap[0].request

    def pop(self) -> EngineRequest:
        return heapq.heappop(self._heap).request

    def remove(self, request: EngineRequest) -> None:
        """vLLM's ``remove_requests``: filter, then heapify."""
        self._heap = [e for e in self._heap if e.request is not request]
        heapq.heapify(self._heap)

    def __contains__(self, request: EngineRequest) -> bool:
        return any(e.request is request for e in self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[EngineRequest]:
        """In order, by popping a copy (as vLLM's ``PriorityRequestQueue.__iter__``)."""
        heap = list(self._heap)
        while heap:
            yield heapq.heappop(heap).request


@dataclass(frozen=True, slots=True)
class EngineLimits:
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    full_sequence_must_fit: bool = True


def token_at(index: int) -> int:
    """The ``index``-th "sampled" token of a replica (from 1): a fixed sequence — the
    model's text is irrelevant here, and prefix-cache hits come from shared prompts, not
    from coinciding outputs."""
    return 100 + (index * 7919) % 800


class TokenCounter:
    """The engine model's sampler: the replica's tokens in the order they are sampled."""

    def __init__(self) -> None:
        self.num_sampled = 0

    def __call__(self, request: EngineRequest) -> int:
        self.num_sampled += 1
        return token_at(self.num_sampled)

    def decode_run(self, num_requests: int, num_steps: int) -> list[list[int]]:
        """The tokens ``num_steps`` decode steps of ``num_requests`` requests sample, per
        request, exactly as as many calls in step-major order would give them."""
        base = self.num_sampled
        self.num_sampled += num_requests * num_steps
        return [[token_at(base + k * num_requests + i + 1) for k in range(num_steps)]
                for i in range(num_requests)]


#: The most decode steps one run plans at once (a longer run is planned again).
DECODE_RUN_HORIZON_STEPS = 256


@dataclass(slots=True, eq=False)
class DecodeRun:
    """Decode steps computed in O(1) each and not yet applied request by request."""

    #: The running requests, in order, when the run began (unchanged during it).
    requests: list[EngineRequest]
    #: Each one's computed tokens when the run began.
    base_computed: list[int]
    #: Their sum.
    base_context: int
    #: How many steps it may compute (none ends a turn or runs out of blocks).
    max_steps: int
    #: Steps computed so far.
    num_steps: int = 0
    #: Of those, steps whose end the replica has delivered (kept by the replica).
    num_delivered: int = 0

    def block_steps(self, block_size: int, blocks_held: list[int], caching: bool,
                    upto: int) -> list[tuple[int, int]]:
        """(step, position) of the steps ``1..upto`` at which a request's allocation does
        something (a new block, or a block filled and cached), in stepping's order."""
        out = []
        for i, computed in enumerate(self.base_computed):
            k = blocks_held[i] * block_size - computed + 1  # the first step past its blocks
            while k <= upto:
                out.append((k, i))
                k += block_size
            if caching:
                k = (-computed) % block_size or block_size  # the first step filling a block
                while k <= upto:
                    out.append((k, i))
                    k += block_size
        return sorted(set(out))


@dataclass(slots=True)
class StepResult:
    """What one step did."""

    shape: StepShape
    #: (request, tokens) in scheduling order.
    scheduled: list[tuple[EngineRequest, int]] = field(default_factory=list)
    admitted: list[EngineRequest] = field(default_factory=list)
    #: Of those, the ones taken from ``waiting`` as new (not preempted): the starvation
    #: pass counts against them, as the vLLM subclass counts ``scheduled_new_reqs``.
    admitted_new: list[EngineRequest] = field(default_factory=list)
    preempted: list[EngineRequest] = field(default_factory=list)
    #: Requests that sampled a token this step.
    sampled: list[EngineRequest] = field(default_factory=list)
    #: Requests whose turn ended this step (finished or paused).
    turn_ended: list[EngineRequest] = field(default_factory=list)
    swap_in_tokens: int = 0
    #: A decode-run step: every request of ``run`` sampled one token (the lists are empty).
    run: DecodeRun | None = None


class EngineModel:
    def __init__(self, limits: EngineLimits, kv: KvCache, ranker: WaitingRanker[Any],
                 next_token: Callable[[EngineRequest], int], *, fast_decode: bool = False,
                 ) -> None:
        if fast_decode and not isinstance(next_token, TokenCounter):
            raise TypeError("fast_decode needs a TokenCounter to sample tokens in bulk")
        self.limits = limits
        self.kv = kv
        self.ranker = ranker
        self.running: list[EngineRequest] = []
        self.waiting: RankedQueue[EngineRequest] = ranker.new_queue()
        #: Requests holding KV outside ``running`` (paused or resumed sessions).
        self.kv_holding = HoldingQueue()
        self._next_token = next_token
        self.num_paused = 0
        self.num_preemptions = 0
        self.num_steps = 0
        self.last_step_tokens = 0
        self.fast_decode = fast_decode
        self._run: DecodeRun | None = None

    # ---- requests in ----------------------------------------------------------------
    def add(self, request: EngineRequest) -> None:
        self.settle()
        request.status = SeqStatus.WAITING
        self.waiting.add_request(request)

    def resume(self, request: EngineRequest, tokens: list[int], max_tokens: int,
               arrival_time: float | None = None) -> None:
        """The next chunk of a paused session: the re-sent last token and ``tokens`` join
        the context it holds; ``arrival_time``: now (vLLM's ``_update_request_as_session``
        restamps it; it stays in the heap where it was)."""
        assert request.status is SeqStatus.PAUSED and request.dropped_token is not None
        self.settle()
        self.num_paused -= 1
        request.token_ids.append(request.dropped_token)
        request.token_ids.extend(tokens)
        request.dropped_token = None
        if arrival_time is not None:
            request.arrival_time = arrival_time
        request.max_tokens, request.num_turn_tokens = max_tokens, 0
        request.status = SeqStatus.WAITING  # it stays in kv_holding, now ready

    def close(self, request: EngineRequest) -> None:
        """End a request wherever it is (abort, session closed, demoted): blocks freed."""
        if request.status is SeqStatus.FINISHED:
            return
        self.settle()
        if request.status is SeqStatus.PAUSED:
            self.num_paused -= 1
        if request.status is SeqStatus.RUNNING:
            self.running.remove(request)
        else:  # vLLM's finish_requests filters both queues (and re-heapifies this one)
            self.kv_holding.remove(request)
            if request in self.waiting:
                self.waiting.remove_request(request)
        self.ranker.forget(request.request_id)
        self.kv.free(request.request_id)
        request.status = SeqStatus.FINISHED


    # ---- state ------------------------------------------------------------------------
    def has_work(self) -> bool:
        return bool(self.running) or bool(self.waiting) or any(
            r.status is not SeqStatus.PAUSED for r in self.kv_holding)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + len(self.kv_holding) - self.num_paused

    def batch_load(self) -> BatchLoad:
        run = self._run
        if run is not None and run.num_steps:
            return BatchLoad(self.last_step_tokens,
                             run.base_context + run.num_steps * len(run.requests))
        return BatchLoad(self.last_step_tokens, sum(r.num_computed_tokens for r in self.running))

    def kv_usage(self) -> float:
        """The KV cache's usage now (decode-run steps applied first)."""
        self.settle()
        return self.kv.usage

    # ---- one step ---------------------------------------------------------------------
    def step(self) -> StepResult:
        self.num_steps += 1
        run = self._run
        if run is not None and run.num_steps < run.max_steps:
            return self._run_step(run)
        self.settle()
        self.ranker.before_step(self.waiting, self.batch_load)
        out = StepResult(StepShape())
        budget = self._schedule_running(out, self.limits.max_num_batched_tokens)
        if not out.preempted:
            self._admit(out, budget)
        self.ranker.after_step(self.waiting, out.admitted_new)
        self._outputs(out)
        self.last_step_tokens = out.shape.num_tokens
        if self.fast_decode:
            self._run = self._plan_run(out)
        return out

    # ---- decode runs --------------------------------------------------------------------
    def _run_step(self, run: DecodeRun) -> StepResult:
        """One step of a decode run: what stepping would do, without touching a request
        (nothing waits, so the ranker only counts the step)."""
        self.ranker.before_step(self.waiting, self.batch_load)
        self.ranker.after_step(self.waiting, ())
        run.num_steps += 1
        n = len(run.requests)
        self.last_step_tokens = n
        return StepResult(StepShape(n, n, 0, run.base_context + run.num_steps * n), run=run)

    def _plan_run(self, out: StepResult) -> DecodeRun | None:
        """The decode run the next steps may be, after ``out``; None when the next step
        may do anything but decode every running request by one token."""
        running = self.running
        if (out.admitted or out.preempted or out.turn_ended or not running or self.waiting
                or len(self.kv_holding) != self.num_paused
                or len(running) > self.limits.max_num_batched_tokens):
            return None
        max_steps = DECODE_RUN_HORIZON_STEPS
        max_model_len = self.limits.max_model_len
        for r in running:
            length = len(r.token_ids)
            if r.num_computed_tokens != length - 1:
                return None  # a prefill goes on
            # the last step before a turn can end (by its max_tokens or the model's length)
            max_steps = min(max_steps, r.max_tokens - r.num_turn_tokens - 1,
                            max_model_len - length - 1)
        if max_steps < 1:
            return None
        computed = [r.num_computed_tokens for r in running]
        run = DecodeRun(list(running), computed, sum(computed), max_steps)
        kv, bs = self.kv, self.kv.block_size
        held = [len(kv.blocks_of(r.request_id)) for r in running]
        free = kv.num_free_blocks
        if free < len(running) * (max_steps // bs + 1):  # may run out: stop before it does
            new = run.block_steps(bs, held, False, max_steps)
            if len(new) > free:
                run.max_steps = new[free][0] - 1
                if run.max_steps < 1:
                    return None
        return run

    def settle(self) -> None:
        """Apply the decode run's computed steps request by request: tokens sampled,
        blocks taken and cached in stepping's order; the run ends."""
        run, self._run = self._run, None
        if run is None or not run.num_steps:
            return
        m, requests, base = run.num_steps, run.requests, run.base_computed
        assert isinstance(self._next_token, TokenCounter)
        for r, tokens in zip(requests, self._next_token.decode_run(len(requests), m)):
            r.token_ids.extend(tokens)
        kv = self.kv
        held = [len(kv.blocks_of(r.request_id)) for r in requests]
        for k, i in run.block_steps(kv.block_size, held, kv.enable_prefix_caching, m):
            r = requests[i]
            r.num_computed_tokens = base[i] + k - 1
            if not kv.allocate_running(r, 1):
                raise AssertionError(f"decode run: no block for {r.request_id} at step {k}")
        for r, computed in zip(requests, base):
            r.num_computed_tokens = computed + m
            r.num_turn_tokens += m

    def _schedule_running(self, out: StepResult, budget: int) -> int:
        scheduled: dict[EngineRequest, int] = {}  # by identity, in scheduling order
        running, allocate = self.running, self.kv.allocate_running
        max_model_len = self.limits.max_model_len
        i = 0
        while i < len(running) and budget > 0:
            request = running[i]
            computed = request.num_computed_tokens
            n = min(len(request.token_ids) - computed, budget, max_model_len - computed)
            if n <= 0:
                i += 1
                continue
            while not allocate(request, n):
                victim = max(running, key=lambda r: (r.priority, r.arrival_time))
                j = running.index(victim)
                del running[j]
                if j < i:
                    i -= 1
                budget += scheduled.pop(victim, 0)
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is request:
                    break
            else:
                scheduled[request] = n
                budget -= n
                i += 1
                continue
            break
        out.scheduled.extend(scheduled.items())
        return budget

    def _preempt(self, request: EngineRequest) -> None:
        self.kv.free(request.request_id)
        request.num_computed_tokens = 0
        request.status = SeqStatus.PREEMPTED
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.add_request(request)  # vLLM's prepend_request: the queue's own order

    def _admit(self, out: StepResult, budget: int) -> None:
        skipped: list[EngineRequest] = []
        while budget > 0 and (self.kv_holding or self.waiting):
            if len(self.running) + self.num_paused >= self.limits.max_num_seqs:
                break
            holding = bool(self.kv_holding)
            request = self.kv_holding.peek() if holding else self.waiting.peek_request()
            if request.status is SeqStatus.PAUSED:  # blocked: skip, put back after
                skipped.append(self.kv_holding.pop())
                continue
            hit: list[int] = []
            restored = 0
            if request.num_computed_tokens == 0:
                hit, computed = self.kv.computed_blocks(request)
                computed = max(computed, request.swapped_in_tokens)
                restored = computed - len(hit) * self.kv.block_size
            else:  # it holds its KV: nothing to look up or restore
                computed = request.num_computed_tokens
            n = min(request.num_tokens - computed, budget)
            if not self.kv.allocate_slots(request, n + restored, hit, len(hit) * self.kv.block_size,
                                          waiting=True, has_scheduled=bool(self.running),
                                          full_sequence_must_fit=self.limits.full_sequence_must_fit):
                break
            if holding:
                self.kv_holding.pop()
            else:
                self.waiting.pop_request()
                if request.status is SeqStatus.WAITING:
                    out.admitted_new.append(request)
            out.swap_in_tokens += restored
            request.swapped_in_tokens = 0
            request.num_cached_tokens = computed  # prefix-cache hits and swapped-in tokens
            request.num_computed_tokens = computed
            request.status = SeqStatus.RUNNING
            self.running.append(request)
            out.admitted.append(request)
            out.scheduled.append((request, n))
            budget -= n
        for request in reversed(skipped):  # vLLM: appendleft each, then push each
            self.kv_holding.push(request)

    def _outputs(self, out: StepResult) -> None:
        num_tokens = num_prefill = context = 0
        max_model_len = self.limits.max_model_len
        for request, n in out.scheduled:
            num_tokens += n
            computed = request.num_computed_tokens + n
            length = len(request.token_ids)
            if computed < length or n > 1:  # not a one-token decode
                num_prefill += n
            context += computed
            request.num_computed_tokens = computed
            if computed < length:
                continue  # a prefill chunk: no token yet
            request.token_ids.append(self._next_token(request))
            request.num_turn_tokens += 1
            out.sampled.append(request)
            if (request.num_turn_tokens >= request.max_tokens
                    or length + 1 >= max_model_len):  # check_stop
                out.turn_ended.append(request)
                self._end_turn(request)
        shape = out.shape
        shape.num_tokens += num_tokens
        shape.num_seqs += len(out.scheduled)
        shape.num_prefill_tokens += num_prefill
        shape.context_tokens += context

    def _end_turn(self, request: EngineRequest) -> None:
        self.running.remove(request)
        if request.session:
            request.dropped_token = request.token_ids.pop()  # the next chunk re-sends it
            request.status = SeqStatus.PAUSED
            self.num_paused += 1
            self.kv_holding.push(request)
        else:
            self.ranker.forget(request.request_id)
            self.kv.free(request.request_id)
            request.status = SeqStatus.FINISHED
