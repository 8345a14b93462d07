"""Arrival processes and synthetic augmented workloads (seeded, deterministic)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def bursty_arrivals(n: int, rate_rps: float, burst_factor: float, burst_period_s: float,
                    burst_duty: float, seed: int = 0) -> list[float]:
    """Arrival times (s) of a Poisson process with a square-wave rate: ``rate × burst_factor``
    during the first ``burst_duty`` fraction of every ``burst_period_s``, ``rate`` in the
    rest, so the mean rate is ``rate × (1 + burst_duty × (burst_factor − 1))`` (1.75 × rate
    with factor 4 and duty 0.25).

    Exact, by time change: unit-rate Poisson points ``s`` are mapped through the inverse of
    the cumulative intensity Λ(t) = ∫₀ᵗ λ(u) du, which is piecewise linear."""
    if rate_rps <= 0 or burst_factor < 1 or burst_period_s <= 0 or not 0 < burst_duty <= 1:
        raise ValueError("need rate > 0, burst_factor ≥ 1, burst_period_s > 0, 0 < burst_duty ≤ 1")
    high_rps = rate_rps * burst_factor
    burst_s = burst_duty * burst_period_s
    burst_mass = high_rps * burst_s  # Λ over one burst window
    period_mass = burst_mass + rate_rps * (burst_period_s - burst_s)
    rng, s, out = random.Random(seed), 0.0, []
    for _ in range(n):
        k, rest = divmod(s, period_mass)
        t = (rest / high_rps if rest < burst_mass
             else burst_s + (rest - burst_mass) / rate_rps)
        out.append(k * burst_period_s + t)
        s += rng.expovariate(1.0)
    return out


@dataclass(frozen=True)
class ArrivalProcess:
    """An arrival process by name (:data:`ARRIVAL_KINDS`) with the parameters of every
    kind; each kind reads only its own."""

    kind: str = "poisson"
    cv: float = 2.0  # gamma: coefficient of variation of the gaps
    burst_factor: float = 4.0  # bursty: rate multiplier inside a burst
    burst_period_s: float = 60.0  # bursty: a burst starts every this many seconds
    burst_duty: float = 0.25  # bursty: fraction of each period spent in the burst

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise ValueError(f"unknown arrival process {self.kind!r}; known: "
                             f"{', '.join(ARRIVAL_KINDS)}")

    def times(self, n: int, rate_rps: float, seed: int = 0) -> list[float]:
        return ARRIVAL_KINDS[self.kind](self, n, rate_rps, seed)

    def mean_rate_rps(self, rate_rps: float) -> float:
        if self.kind == "bursty":
            return rate_rps * (1 + self.burst_duty * (self.burst_factor - 1))
        return rate_rps

    def describe(self) -> dict[str, Any]:
        """The kind and the parameters it uses (for a workload's meta)."""
        keys = {"gamma": ("cv",), "bursty": ("burst_factor", "burst_period_s", "burst_duty")}
        return {"arrival": self.kind, **{k: getattr(self, k) for k in keys.get(self.kind, ())}}


#: Arrival processes by name: (process, n, rate_rps, seed) -> arrival times in seconds.
ARRIVAL_KINDS: dict[str, Callable[[ArrivalProcess, int, float, int], list[float]]] = {
    "poisson": lambda p, n, rate, seed: poisson_arrivals(n, rate, seed),
    "gamma": lambda p, n, rate, seed: gamma_arrivals(n, rate, p.cv, seed),
    "bursty": lambda p, n, rate, seed: bursty_arrivals(
        n, rate, p.burst_factor, p.burst_period_s, p.burst_duty, seed),
}


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
