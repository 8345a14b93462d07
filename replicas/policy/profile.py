"""A replica's performance profile (ALGORITHMS.md, "Profiles"): the iteration-time line
``t_fwd(x) = a·x + c`` ms for an engine step that processes ``x`` tokens, the saturation
batch size ``S`` (tokens; below it a step costs about the same), KV bytes per token and,
where the platform can swap, the swap bandwidth.  Plain Python: measured on the engine at
start-up (``replicas.profiling``), refreshed from live step timings by :class:`OnlineFit`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One timed engine step: the batch it processed and how long it took."""

    #: Tokens computed in the step (prefill chunks and decodes).
    num_tokens: int
    num_seqs: int
    #: Of ``num_tokens``, those of prefill chunks (a decode is one token of a request
    #: whose prompt is done).
    num_prefill_tokens: int
    #: Context the step's sequences attend to: their computed tokens after it, summed.
    context_tokens: int
    step_ms: float
    #: When the model ran (the engine core's ``perf_counter``, s; 0: not recorded):
    #: consecutive steps give the host time between them.
    started_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaProfile:
    a_ms_per_token: float
    c_ms: float
    saturation_tokens: int
    kv_bytes_per_token: int
    #: Bytes per second between device and host memory; None where swap is unsupported.
    swap_bytes_per_s: float | None = None
    #: Where the numbers came from: "default", "profiled", "live".
    source: str = "default"

    def step_s(self, num_tokens: float) -> float:
        """Seconds of one engine step that processes ``num_tokens`` tokens."""
        return (self.a_ms_per_token * max(num_tokens, 0.0) + self.c_ms) / 1000.0

    @property
    def can_swap(self) -> bool:
        return self.swap_bytes_per_s is not None and self.swap_bytes_per_s > 0

    def swap_s_per_token(self) -> float:
        """Seconds to move one token's KV one way (inf without swap)."""
        if not self.can_swap:
            return math.inf
        return self.kv_bytes_per_token / float(self.swap_bytes_per_s)  # type: ignore[arg-type]

    def to_json(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``y = a·x + c`` over (x, y) points; ``a`` ≥ 0 and ``c`` ≥ 0."""
    if not points:
        raise ValueError("no points to fit")
    n = float(len(points))
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    a = 0.0 if sxx == 0 else sum((p[0] - mx) * (p[1] - my) for p in points) / sxx
    a = max(a, 0.0)
    return a, max(my - a * mx, 0.0)


def saturation_tokens(points: Sequence[tuple[float, float]], tolerance: float = 0.2) -> int:
    """The largest token count whose step time stays within ``tolerance`` of the
    smallest one's (the flat part of the curve); at least the smallest x measured."""
    ordered = sorted(points)
    base = ordered[0][1]
    flat = [x for x, y in ordered if y <= base * (1.0 + tolerance)]
    return int(max(flat))


def profile_from_points(points: Sequence[tuple[float, float]], kv_bytes_per_token: int,
                        swap_bytes_per_s: float | None = None) -> ReplicaProfile:
    """A profile from measured (tokens in the step, step ms) points."""
    a, c = fit_line(points)
    return ReplicaProfile(a_ms_per_token=a, c_ms=c, saturation_tokens=saturation_tokens(points),
                          kv_bytes_per_token=kv_bytes_per_token,
                          swap_bytes_per_s=swap_bytes_per_s, source="profiled")


class OnlineFit:
    """Refreshes ``a`` and ``c`` from live step timings: exponentially weighted sums of a
    least-squares fit, so old steps fade (``half_life_steps``)."""

    def __init__(self, profile: ReplicaProfile, half_life_steps: float = 2000.0,
                 min_steps: int = 200) -> None:
        self.profile = profile
        self._decay = 0.5 ** (1.0 / half_life_steps)
        self._min_steps = min_steps
        self._n = self._sx = self._sy = self._sxx = self._sxy = 0.0
        self.num_steps = 0
        self._xs: set[int] = set()

    def add(self, num_tokens: float, step_ms: float) -> None:
        d = self._decay
        self._n = self._n * d + 1.0
        self._sx = self._sx * d + num_tokens
        self._sy = self._sy * d + step_ms
        self._sxx = self._sxx * d + num_tokens * num_tokens
        self._sxy = self._sxy * d + num_tokens * step_ms
        self.num_steps += 1
        if len(self._xs) < 8:
            self._xs.add(int(num_tokens) // 16)

    def current(self) -> ReplicaProfile:
        """The refreshed profile once enough varied steps were seen, else the start one."""
        if self.num_steps < self._min_steps or len(self._xs) < 3:
            return self.profile
        var = self._sxx / self._n - (self._sx / self._n) ** 2
        if var <= 0:
            return self.profile
        a = (self._sxy / self._n - self._sx * self._sy / self._n ** 2) / var
        a = max(a, 0.0)
        c = max(self._sy / self._n - a * self._sx / self._n, 0.0)
        p = self.profile
        return ReplicaProfile(a, c, p.saturation_tokens, p.kv_bytes_per_token,
                              p.swap_bytes_per_s, source="live")
