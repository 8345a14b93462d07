"""Arrival processes and synthetic augmented workloads (seeded, deterministic)."""

from __future__ import annotations

import math
import random

from benchmarks.workload import Turn, Workload, WorkloadRequest, synthetic_prompt


def poisson_arrivals(n: int, rate_rps: float, seed: int = 0) -> list[float]:
    """Arrival times (s) of a Poisson process: exponential gaps with mean 1/rate."""
    if rate_rps <= 0:
        raise ValueError("rate must be > 0")
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate_rps)
    return out


def gamma_arrivals(n: int, rate_rps: float, cv: float, seed: int = 0) -> list[float]:
    """Bursty arrivals: Gamma gaps with mean 1/rate and coefficient of variation ``cv``
    (cv > 1 is burstier than Poisson, cv = 1 is Poisson)."""
    if rate_rps <= 0 or cv <= 0:
        raise ValueError("rate and cv must be > 0")
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate_rps * shape)
    rng, t, out = random.Random(seed), 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.gammavariate(shape, scale)
    return out


def arrivals(kind: str, n: int, rate_rps: float, seed: int = 0, cv: float = 2.0) -> list[float]:
    if kind == "poisson":
        return poisson_arrivals(n, rate_rps, seed)
    if kind == "gamma":
        return gamma_arrivals(n, rate_rps, cv, seed)
    raise ValueError(f"unknown arrival process {kind!r}; known: poisson, gamma")


#: INFERCEPT's six augmentation types: (mean API time s, mean calls per request), as
#: reported (ALGORITHMS.md).
INFERCEPT_TYPES: dict[str, tuple[float, float]] = {
    "math": (9e-5, 3.75),
    "qa": (0.69, 2.52),
    "virtual_env": (0.09, 28.2),
    "chatbot": (28.6, 4.45),
    "image": (20.0, 6.91),
    "tts": (17.2, 6.91),
}


def _poisson_count(rng: random.Random, mean: float) -> int:
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def infercept_workload(n: int, seed: int = 0, types: list[str] | None = None,
                       generate_tokens: tuple[int, int] = (16, 64),
                       api_tokens: tuple[int, int] = (8, 32),
                       prompt_tokens: tuple[int, int] = (64, 256)) -> Workload:
    """Requests of INFERCEPT's types, chosen uniformly: calls ~ Poisson(type mean, ≥ 1),
    API durations ~ exponential(type mean).  Turn lengths, tool result sizes and prompt
    lengths are not published with the types: they are uniform in the given ranges."""
    names = types or list(INFERCEPT_TYPES)
    unknown = set(names) - set(INFERCEPT_TYPES)
    if unknown:
        raise ValueError(f"unknown augmentation types {sorted(unknown)}")
    rng = random.Random(seed)
    requests = []
    for i in range(n):
        kind = rng.choice(names)
        mean_s, calls_mean = INFERCEPT_TYPES[kind]
        calls = max(1, _poisson_count(rng, calls_mean))
        turns = [Turn(rng.randint(*generate_tokens), kind, rng.expovariate(1.0 / mean_s),
                      rng.randint(*api_tokens)) for _ in range(calls)]
        turns.append(Turn(rng.randint(*generate_tokens)))
        rid = f"{kind}-{i}"
        requests.append(WorkloadRequest(rid, synthetic_prompt(rng.randint(*prompt_tokens), rid),
                                        None, tuple(turns), kind=kind))
    return Workload("infercept", requests, {"generator": "infercept", "seed": seed,
                                            "types": names})
