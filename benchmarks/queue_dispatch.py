"""The queue manager alone (issue 6: ≥ 5,000 dispatch decisions/s with 10,000 queued):
the very :class:`~orchestrator.dispatcher.Dispatcher` the actor runs, driven without Ray.

Steady state: ``--queued`` requests wait (mixed SLO classes, predicted lengths), the fleet
is full; each round a replica finishes one request and reports (a slot frees), the
dispatcher picks the next request and its replica (one decision), and a new request is
admitted to keep the queue length.  Prints decisions/s and the cost of admission and of
the periodic estimator pass (and QLM's re-plan) over the whole queue.  The clock is real:
the pass runs every ``replan_period_s`` (0.5 s) as in the actor, and its time counts in
the decisions/s."""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import time

from orchestrator.config import QueueConfig
from orchestrator.dispatcher import Dispatcher
from orchestrator.errors import SLOUnattainableError
from orchestrator.queued import QueuedRequest
from predictor_service.types import Prediction
from replicas.types import (
    ReplicaLimits,
    ReplicaStats,
    RequestHeader,
    SLOSpec,
    SpeedProfile,
)

CLASSES = (("interactive", 2_000, 20_000), ("standard", 10_000, 120_000), ("batch", None, 3_600_000))


class Clock:
    """Real time, so that the periodic pass runs as often as in the actor."""

    @property
    def now_s(self) -> float:
        return time.monotonic()

    def __call__(self) -> float:
        return time.monotonic()


def _request(i: int, rng: random.Random, clock: Clock) -> QueuedRequest:
    name, ttft, e2e = CLASSES[rng.randrange(3)]
    tokens = rng.lognormvariate(4.5, 0.8)
    header = RequestHeader(f"q{i}", "m", slo=SLOSpec(class_name=name, ttft_ms=ttft, e2e_ms=e2e),
                           arrival_s=clock.now_s, prediction=Prediction(tokens, tokens, tokens * 1.8))
    return QueuedRequest(header, num_prompt_tokens=rng.randint(20, 2000), max_tokens=2048)


def _stats(rid: str, seqs: int, tps: float, active: tuple[str, ...]) -> ReplicaStats:
    return ReplicaStats(replica_id=rid, deployment=f"d-{rid}", gpu_class=rid, model="m",
                        limits=ReplicaLimits(seqs, 0), num_running=seqs,
                        output_tokens_per_s=tps, active_request_ids=active,
                        speed_profile=SpeedProfile(0.02, 8.0))


def measure(policy: str, queued: int, decisions: int, num_replicas: int,
            seed: int = 0) -> dict[str, float]:
    rng, clock = random.Random(seed), Clock()
    config = QueueConfig(policy=policy, placement="estimated-completion", max_queued=queued * 2,
                         queue_timeout_s=1e9, replica_timeout_s=1e9, lost_grace_s=1e9,
                         default_slo_class=None)
    d = Dispatcher(config, clock)
    replicas = [(f"r{k}", 8 * (1 + k % 3), 200.0 * (1 + k % 3)) for k in range(num_replicas)]
    for rid, seqs, tps in replicas:
        d.report(_stats(rid, seqs, tps, ()))
    n = 0
    admit_s: list[float] = []

    def admit() -> None:
        nonlocal n
        r = _request(n, rng, clock)
        n += 1
        t0 = time.perf_counter()
        try:
            d.admit(r)
        except SLOUnattainableError:  # the estimate says it would miss: refused, as served
            pass
        admit_s.append(time.perf_counter() - t0)

    while d.num_in_flight < sum(s for _, s, _ in replicas):  # fill the fleet
        admit()
        d.dispatch()
    while d.num_queued < queued:
        admit()
    t0 = time.perf_counter()
    d.run_pass(force=True)
    pass_s = time.perf_counter() - t0
    in_flight = {state.replica_id: list(state.in_flight) for state in d.replicas}
    made = 0
    dispatch_s = 0.0
    admit_s.clear()
    for i in range(decisions):
        rid, _, _ = replicas[i % len(replicas)]
        done = in_flight[rid].pop(0)
        t0 = time.perf_counter()
        d.complete(done)
        d.run_pass()  # every replan_period_s (0.5 s), as the actor's tick does
        got = d.dispatch()
        dispatch_s += time.perf_counter() - t0
        made += len(got)
        for a in got:
            in_flight[a.replica_id].append(a.request_id)
        while d.num_queued < queued:
            admit()
    return {"decisions": made, "decisions_per_s": made / dispatch_s,
            "admit_us_p50": statistics.median(admit_s) * 1e6,
            "admissions_per_s": len(admit_s) / sum(admit_s), "pass_ms": pass_s * 1000,
            "queued": d.num_queued}


def main(args: argparse.Namespace) -> int:
    logging.getLogger("orchestrator").setLevel(logging.WARNING)
    for policy in args.policies.split(","):
        m = measure(policy, args.queued, args.decisions, args.replicas)
        print(f"{policy:>5}: {m['queued']} queued, {args.replicas} replicas: "
              f"{m['decisions_per_s']:,.0f} dispatch decisions/s ({m['decisions']} made); "
              f"admission {m['admissions_per_s']:,.0f}/s (p50 {m['admit_us_p50']:.0f} µs); "
              f"estimator pass{' + re-plan' if policy == 'qlm' else ''} over the queue "
              f"{m['pass_ms']:.0f} ms")
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("queue-dispatch", help="dispatch decisions/s of the queue manager "
                         "with N queued (no Ray)")
    p.add_argument("--queued", type=int, default=10_000)
    p.add_argument("--decisions", type=int, default=20_000)
    p.add_argument("--replicas", type=int, default=12)
    p.add_argument("--policies", default="fifo,edf,qlm")
