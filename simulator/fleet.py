"""The simulated fleet: the global queue manager's own :class:`Dispatcher` (its queue
policy, estimator, QLM planner, placement, admission, eviction and expiry) on the
simulated clock, the replicas of :mod:`simulator.replica`, and the calls the queue
manager receives in serving (``orchestrator.queue_manager``):

- an arrival is predicted (the ingress's call), assessed and enqueued, then the queue is
  pumped (``dispatch``): each assignment is submitted to its replica;
- a completion releases its room (``complete`` with the SLO verdict) and pumps;
- each replica reports every ``stats_period_s`` (``report``; evictions come back and the
  evicted request is re-queued with its original deadline, avoiding that replica);
- every ``tick_s`` the queue expires, reaps and runs its pass (``tick``).

``direct``: no queue manager at all — every arrival is submitted at once to the first
replica (as ``benchmarks.direct_replay`` feeds the real engine for a fidelity point).
``shared_cpu``: the engines share one machine's cores (:mod:`simulator.shared_cpu`: this
CPU test bed's fleet fidelity points), else each has its own accelerator.

Every request of the workload ends in a :class:`~benchmarks.metrics.RequestRecord`, the
record ``bench run`` writes, with the HTTP status the ingress would have answered;
requests still in flight when the window closes are counted as unfinished (status 0)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.metrics import RequestRecord
from benchmarks.workload import Workload, WorkloadRequest
from orchestrator.config import AppConfig
from orchestrator.dispatcher import Dispatcher
from orchestrator.errors import AugserveError
from orchestrator.outcomes import Outcome
from orchestrator.policies.qlm import QlmPlanner
from orchestrator.queued import QueuedRequest
from replicas.types import AugTurn, RequestHeader, SLOSpec
from simulator.events import EventLoop, Phase
from simulator.predictions import Predictions
from simulator.replica import ReplicaSetup, SimCall, SimReplica
from simulator.shared_cpu import CpuPool, SharedCpu

#: The MILP's wall-time limit in simulation: never reached within the node limit.
PLAN_TIME_LIMIT_S = 600.0
#: Simulated time starts here, so that every record has a send time (> 0).
START_S = 1.0
UNFINISHED = "unfinished at the end of the window"


@dataclass
class _Pending:
    work: WorkloadRequest
    queued: QueuedRequest
    record: RequestRecord
    turns: tuple[AugTurn, ...]
    prompt: list[int]


class SimFleet:
    def __init__(self, app: AppConfig, setups: list[ReplicaSetup], predictions: Predictions,
                 loop: EventLoop, plan_node_limit: int | None = 2000, *,
                 direct: bool = False, shared_cpu: SharedCpu | None = None) -> None:
        self.app = app
        self.direct = direct
        self.loop = loop
        self.loop.now_s = START_S
        self.predictions = predictions
        self.dispatcher = Dispatcher(app.queue, self.loop.clock, slo_classes=dict(app.slo_classes))
        _deterministic_plan(self.dispatcher, plan_node_limit)
        pool = CpuPool(shared_cpu) if shared_cpu is not None else None
        self.replicas = {s.replica_id: SimReplica(s, self.loop, pool) for s in setups}
        self._model_of = {r.model_name: r for r in app.replicas}
        self.pending: dict[str, _Pending] = {}
        self.records: list[RequestRecord] = []
        self._stats_period_s = {r.name: r.stats_period_s for r in app.replicas}
        self._arrivals_left = 0
        self.end_s: float | None = None
        #: Called once per request that ends (completed or failed): progress.
        self.on_request_end: Callable[[], None] = lambda: None

    # ---- the run -------------------------------------------------------------------------
    def run(self, workload: Workload, model: str, window_s: float | None) -> list[RequestRecord]:
        """Replay ``workload`` (arrival times set) on ``model``; ``window_s``: stop then
        (unfinished requests counted), else when every request has ended."""
        for replica in self.replicas.values() if not self.direct else ():
            self._report(replica)
            period = self._stats_period_s[replica.setup.deployment]
            self._every(period, Phase.REPORT, functools.partial(self._report, replica))
        self._every(self.app.queue.tick_s, Phase.TICK, self._tick)
        self._arrivals_left = len(workload.requests)
        for w in workload.requests:
            at = START_S + float(w.arrival_s or 0.0)
            self.loop.at(at, Phase.ARRIVAL, functools.partial(self._arrive, w, model))
        if window_s is not None:
            self.loop.at(START_S + window_s, Phase.END, self.loop.stop)
        self.loop.run()
        self.end_s = self.loop.now_s
        for p in self.pending.values():
            p.record.error = UNFINISHED
        return self.records

    def _every(self, period_s: float, phase: Phase, action: Callable[[], None]) -> None:
        def tick() -> None:
            if self._done():
                self.loop.stop()
                return
            action()
            self.loop.at(self.loop.now_s + period_s, phase, tick)
        self.loop.at(self.loop.now_s + period_s, phase, tick)

    def _done(self) -> bool:
        return self._arrivals_left == 0 and not self.pending

    # ---- arrivals ------------------------------------------------------------------------
    def _arrive(self, w: WorkloadRequest, model: str) -> None:
        self._arrivals_left -= 1
        now = self.loop.now_s
        turns = tuple(AugTurn(t.generate_tokens, t.api_name, t.api_duration_s, t.api_tokens)
                      for t in w.turns)
        prompt = list(w.prompt_token_ids or ())
        max_tokens = sum(t.generate_tokens for t in turns)
        record = RequestRecord(w.request_id, w.slo, now, scheduled_s=now, send_s=now,
                               expected_tokens=max_tokens,
                               expected_turn_tokens=[t.generate_tokens for t in turns])
        self.records.append(record)
        prediction = (self.predictions.at_arrival(model, prompt, turns, max_tokens)
                      if self.app.predictor.enabled else None)
        header = RequestHeader(w.request_id, model, slo=self._slo(w.slo), arrival_s=now,
                               prediction=prediction)
        queued = QueuedRequest(header, num_prompt_tokens=len(prompt), max_tokens=max_tokens,
                               num_turns=len(turns))
        p = _Pending(w, queued, record, turns, prompt)
        self.pending[w.request_id] = p
        if self.direct:
            next(iter(self.replicas.values())).submit(self._call(p))
            return
        self._admit(p)
        self._pump()

    def _slo(self, name: str | None) -> SLOSpec | None:
        if name is None:
            return None
        c = self.app.slo_classes[name]
        return SLOSpec(class_name=name, ttft_ms=c.ttft_ms, e2e_ms=c.e2e_ms)

    def _admit(self, p: _Pending) -> None:
        try:
            self.dispatcher.assess(p.queued)
            self.dispatcher.insert(p.queued)
        except AugserveError as exc:
            self._fail(p, exc.status_code, f"{type(exc).__name__}: {exc}")

    def _fail(self, p: _Pending, status: int, error: str) -> None:
        p.record.status, p.record.error = status, error
        p.record.end_s = self.loop.now_s
        self.pending.pop(p.queued.request_id, None)
        self.on_request_end()

    # ---- the queue manager's calls --------------------------------------------------------
    def _pump(self) -> None:
        for a in self.dispatcher.dispatch():
            p = self.pending.get(a.request_id)
            if p is None:  # gone in the same instant
                self.dispatcher.cancel(a.request_id)
                continue
            self.replicas[a.replica_id].submit(self._call(p))
        self.dispatcher.journal.clear()  # no durable store in simulation

    def _call(self, p: _Pending) -> SimCall:
        model = p.queued.model

        def repredict(call: SimCall, index: int, history: list[int]):
            if not self.app.predictor.enabled:
                return None
            return self.predictions.at_resume(model, history, p.turns, index,
                                              p.queued.max_tokens)
        return SimCall(p.queued.request_id, p.prompt, p.turns, p.queued.priority,
                       p.record.arrival_s, p.queued.prediction,
                       on_done=lambda call, now: self._done_call(p, call, now),
                       repredict=repredict)

    def _done_call(self, p: _Pending, call: SimCall, now: float) -> None:
        r = p.record
        r.status, r.first_token_s, r.end_s = 200, call.first_token_s, now
        r.output_tokens, r.turn_tokens = call.output_tokens, list(call.turn_tokens)
        r.api_time_s = sum(call.api_wait_s)
        self.pending.pop(call.request_id, None)
        self.on_request_end()
        if not self.direct:
            self.dispatcher.complete(call.request_id, Outcome.COMPLETED, self._slo_met(p))
        if self.app.predictor.enabled:
            names = [t.api_name for t in p.turns if t.api_name]
            self.predictions.observe(p.queued.model, p.prompt, call.turn_tokens,
                                     list(zip(names, call.api_wait_s)))
        self._pump()

    def _slo_met(self, p: _Pending) -> bool | None:
        """``orchestrator.streaming.RequestRun.slo_met``, on the record's times."""
        slo, r = p.queued.slo, p.record
        if slo is None:
            return None
        ttft = r.ttft_s
        ttft_ok = slo.ttft_ms is None or (ttft is not None and ttft * 1000 <= slo.ttft_ms)
        return ttft_ok and (slo.e2e_ms is None or (r.e2e_s or 0.0) * 1000 <= slo.e2e_ms)

    def _report(self, replica: SimReplica) -> None:
        for request_id in self.dispatcher.report(replica.stats()):
            p = self.pending.get(request_id)
            if p is None or not replica.evict(request_id):
                continue
            p.queued.evicted = True
            p.queued.avoid_replica = replica.replica_id
            self.dispatcher.release_for_retry(request_id, Outcome.EVICTED)
            self._admit(p)
        self._pump()

    def _tick(self) -> None:
        if self.direct:
            return
        for request, slo_deadline in self.dispatcher.expire():
            p = self.pending.get(request.request_id)
            if p is not None:
                self._fail(p, 504 if slo_deadline else 503,
                           "DeadlineExceededError" if slo_deadline else "QueueTimeoutError")
        self.dispatcher.reap_replicas()
        self.dispatcher.run_pass()
        self._pump()


def _deterministic_plan(dispatcher: Dispatcher, node_limit: int | None) -> None:
    """QLM's MILP under a HiGHS node limit instead of its wall-time limit, so that a plan
    depends on the inputs only (serving keeps the time limit)."""
    planner = dispatcher.planner
    if isinstance(planner, QlmPlanner):
        planner.node_limit = node_limit
        planner.time_limit_s = PLAN_TIME_LIMIT_S
