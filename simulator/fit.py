"""Fitting a step-cost model to the real engine's step records, scored on held-out steps.

The records (:class:`~replicas.policy.profile.StepRecord`) are split by a seeded shuffle:
the linear model ``c + a·tokens + b·Σcontext`` is fitted by least squares (coefficients
kept ≥ 0) on one part and scored on the other:

- mean absolute error of a step's time, relative to the mean step time (goal ≤ 10 %);
- total-time bias, ``(Σ predicted − Σ measured) / Σ measured`` (goal within ±3 %).
"""

from __future__ import annotations

import csv

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pathlib import Path

from replicas.policy.profile import StepRecord
from simulator.cost import LinearCost, StepCost, StepShape


@dataclass(frozen=True, slots=True)
class FitScore:
    num_steps: int
    mean_abs_error: float
    total_bias: float


def _design(records: Sequence[StepRecord]) -> np.ndarray:
    return np.array([[1.0, r.num_tokens, r.context_tokens] for r in records])


def fit_linear(records: Sequence[StepRecord]) -> LinearCost:
    """Least squares with non-negative coefficients (a negative one is dropped and the
    rest refitted)."""
    if len(records) < 3:
        raise ValueError(f"need at least 3 step records to fit, got {len(records)}")
    x, y = _design(records), np.array([r.step_ms for r in records])
    keep = [0, 1, 2]
    while True:
        coef, *_ = np.linalg.lstsq(x[:, keep], y, rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            break
        keep.pop(int(np.argmin(coef)))
    full = dict(zip(keep, (max(float(c), 0.0) for c in coef)))
    return LinearCost(full.get(0, 0.0), full.get(1, 0.0), full.get(2, 0.0))


def score(cost: StepCost, records: Sequence[StepRecord]) -> FitScore:
    measured = np.array([r.step_ms for r in records])
    predicted = np.array([cost.step_ms(StepShape(r.num_tokens, r.num_seqs, r.num_prefill_tokens,
                                                  r.context_tokens)) for r in records])
    return FitScore(len(records), float(np.abs(predicted - measured).mean() / measured.mean()),
                    float((predicted.sum() - measured.sum()) / measured.sum()))


#: The columns of a steps file (``simulate fidelity`` writes one per real repetition).
STEP_FIELDS = ("num_tokens", "num_seqs", "num_prefill_tokens", "context_tokens", "step_ms",
               "started_s")


def write_steps(path: Path, steps: Sequence[StepRecord]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(STEP_FIELDS)
        w.writerows([getattr(r, k) for k in STEP_FIELDS] for r in steps)


def read_steps(path: Path) -> list[StepRecord]:
    """A steps file; a missing column or a bad number raises ValueError naming the file
    (``started_s`` may be missing: files written before it was recorded)."""
    try:
        with path.open() as f:
            return [StepRecord(int(r["num_tokens"]), int(r["num_seqs"]),
                               int(r["num_prefill_tokens"]), int(r["context_tokens"]),
                               float(r["step_ms"]), float(r.get("started_s") or 0.0))
                    for r in csv.DictReader(f)]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a steps file ({STEP_FIELDS}): {exc}") from None


#: A pause between two steps longer than this is the engine idle, not host work.
IDLE_GAP_MS = 50.0


def host_gaps_ms(steps: Sequence[StepRecord]) -> list[float]:
    """The host time between consecutive recorded steps (the engine core's scheduling,
    output processing and loop, outside the timed model run), in ms; pauses of
    :data:`IDLE_GAP_MS` or more (nothing to run) and steps without a start time are left
    out."""
    out = []
    for a, b in zip(steps, steps[1:]):
        if a.started_s > 0 and b.started_s > 0:
            gap = (b.started_s - a.started_s) * 1000.0 - a.step_ms
            if 0.0 <= gap < IDLE_GAP_MS:
                out.append(gap)
    return out


def split(records: Sequence[StepRecord], held_out: float = 0.3,
          seed: int = 0) -> tuple[list[StepRecord], list[StepRecord]]:
    """(fit part, held-out part) by a seeded shuffle."""
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_test = max(1, int(len(records) * held_out))
    test = {i for i in order[:n_test]}
    return ([r for i, r in enumerate(records) if i not in test],
            [r for i, r in enumerate(records) if i in test])
