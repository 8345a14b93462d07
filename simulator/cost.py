"""Step-cost models: how long one engine step takes, from the shape of its batch.

Kept apart from the policies' own :class:`~replicas.policy.ReplicaProfile` (what a replica
*believes* its speed is): the simulator's truth is this model, so a policy fed a wrong
profile shows its sensitivity to it.

- :class:`LinearCost` — ``c + a·tokens + b·Σcontext`` ms (``tokens``: tokens computed in
  the step; ``Σcontext``: the context each scheduled sequence attends to, its computed
  tokens after the step, summed).
- :class:`TableCost` — piecewise-linear interpolation of measured (tokens, ms) points
  (flat beyond the ends' slope), plus ``b·Σcontext``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(slots=True)
class StepShape:
    """The batch of one engine step."""

    num_tokens: int = 0
    num_seqs: int = 0
    num_prefill_tokens: int = 0
    context_tokens: int = 0


class StepCost:
    def step_ms(self, shape: StepShape) -> float:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class LinearCost(StepCost):
    c_ms: float
    a_ms_per_token: float
    b_ms_per_context_token: float = 0.0

    def step_ms(self, shape: StepShape) -> float:
        return (self.c_ms + self.a_ms_per_token * shape.num_tokens
                + self.b_ms_per_context_token * shape.context_tokens)


@dataclass(frozen=True, slots=True)
class TableCost(StepCost):
    """``points``: (tokens, ms) sorted by tokens, at least two."""

    points: tuple[tuple[float, float], ...]
    b_ms_per_context_token: float = 0.0

    def __post_init__(self) -> None:
        xs = [p[0] for p in self.points]
        if len(xs) < 2 or xs != sorted(xs) or len(set(xs)) != len(xs):
            raise ValueError("a table needs two or more points with increasing tokens")

    def step_ms(self, shape: StepShape) -> float:
        pts = self.points
        x = float(shape.num_tokens)
        i = bisect.bisect_right([p[0] for p in pts], x)
        i = min(max(i, 1), len(pts) - 1)
        (x0, y0), (x1, y1) = pts[i - 1], pts[i]
        ms = y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return max(ms, 0.0) + self.b_ms_per_context_token * shape.context_tokens
