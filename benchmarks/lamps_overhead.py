"""Scheduling overhead of the replica policy per engine step (issue 5: ≤ 1 ms with 256
waiting requests).  Runs the very code the vLLM scheduler subclass runs each step — the
ranked waiting queue re-keyed with LAMPS scores, the starvation guard's pass counting —
on 256 waiting requests with plain objects in place of vLLM's, and prints percentiles.
(The live figure per step is also in each replica's stats: ``score_ms_per_step_*``.)"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass, field

from replicas.policy import (BatchLoad, Outlook, RankKey, ReplicaProfile, StarvationGuard,
                             make_policy)
from replicas.policy.waiting import RankedQueue


@dataclass
class FakeRequest:
    request_id: str
    arrival_time: float
    outlook: Outlook
    priority: int = 0
    extra: dict = field(default_factory=dict)


def measure(num_waiting: int, steps: int, policy_name: str, rerank_every_steps: int = 1,
            seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    policy = make_policy(policy_name)
    profile = ReplicaProfile(0.04, 16.0, 384, 512)
    load = BatchLoad(200, 20_000)
    guard = StarvationGuard(100)
    scores: dict[str, float | None] = {}

    def key(r: FakeRequest) -> RankKey:
        if r.request_id not in scores:
            scores[r.request_id] = policy.score(r.outlook, profile, load)
        return RankKey.of(r.request_id, r.priority, r.arrival_time, scores[r.request_id],
                          guard.promoted(r.request_id))

    queue: RankedQueue[FakeRequest] = RankedQueue(key)
    n = 0

    def new_request() -> FakeRequest:
        nonlocal n
        n += 1
        api = rng.random() < 0.7
        o = Outlook(rng.randint(100, 3000), rng.uniform(5, 400),
                    rng.uniform(0.1, 30) if api else None, rng.randint(0, 50),
                    rng.uniform(5, 300) if api else 0.0)
        return FakeRequest(f"r{n}", float(n), o)

    for _ in range(num_waiting):
        queue.add_request(new_request())
    times = []
    for step in range(steps):
        started = time.perf_counter()
        if step % rerank_every_steps == 0:   # as the scheduler: every k steps, all scores again
            scores.clear()
            queue.rekey()
        admitted = [queue.pop_request() for _ in range(2)]   # the engine admits two
        for r in admitted:
            guard.forget(r.request_id)
        waiting = [(r.request_id, r.arrival_time) for r in queue]
        if guard.after_step(waiting, [r.arrival_time for r in admitted]):
            queue.rekey()
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
