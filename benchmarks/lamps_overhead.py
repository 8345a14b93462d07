"""Scheduling overhead of the replica policy per engine step (issue 5: ≤ 1 ms with 256
waiting requests).  Runs :class:`replicas.policy.ranking.WaitingRanker`, the very glue
the vLLM scheduler subclass and the simulator run each step (re-rank every k steps with
the batch load read afresh, the starvation pass after admission), on 256 waiting
requests with plain objects in place of vLLM's, and prints percentiles.  (The live
figure per step is also in each replica's stats: ``score_ms_per_step_*``.)"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass

from replicas.policy import BatchLoad, Outlook, ReplicaProfile, make_policy
from replicas.policy.ranking import WaitingRanker


@dataclass
class BenchRequest:
    request_id: str
    arrival_time: float
    outlook: Outlook
    priority: int = 0


def measure(num_waiting: int, steps: int, policy_name: str, rerank_every_steps: int = 1,
            seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    ranker: WaitingRanker[BenchRequest] = WaitingRanker(
        lambda r: r.outlook, make_policy(policy_name), ReplicaProfile(0.04, 16.0, 384, 512),
        starvation_threshold_steps=100, rerank_every_steps=rerank_every_steps,
        live_profile=False)
    queue = ranker.new_queue()
    n = 0

    def new_request() -> BenchRequest:
        nonlocal n
        n += 1
        api = rng.random() < 0.7
        o = Outlook(rng.randint(100, 3000), rng.uniform(5, 400),
                    rng.uniform(0.1, 30) if api else None, rng.randint(0, 50),
                    rng.uniform(5, 300) if api else 0.0)
        return BenchRequest(f"r{n}", float(n), o)

    def load() -> BatchLoad:  # a batch that drifts, as the engine's does
        return BatchLoad(rng.randint(100, 384), rng.randint(10_000, 30_000))

    for _ in range(num_waiting):
        queue.add_request(new_request())
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        ranker.before_step(queue, load)
        admitted = [queue.pop_request() for _ in range(2)]   # the engine admits two
        ranker.after_step(queue, admitted)
        times.append((time.perf_counter() - started) * 1000)
        for _ in range(2):                   # two arrive: the queue stays at num_waiting
            queue.add_request(new_request())
    return times


def main(args: argparse.Namespace) -> int:
    for name in args.policies.split(","):
        for k in [int(x) for x in args.rerank_every.split(",")]:
            times = sorted(measure(args.waiting, args.steps, name, k))
            mean = statistics.fmean(times)
            p50 = statistics.median(times)
            p99 = times[int(len(times) * 0.99) - 1]
            print(f"{name:>6} k={k:<2}: {args.waiting} waiting: per-step scheduling mean "
                  f"{mean:.3f} ms, p50 {p50:.3f} ms, p99 {p99:.3f} ms ({args.steps} steps)")
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("lamps-overhead", help="per-step scheduling cost with N waiting")
    p.add_argument("--waiting", type=int, default=256)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--policies", default="lamps,sjf,fcfs")
    p.add_argument("--rerank-every", default="1,4,8", help="values of rerank_every_steps")
