"""How a simulated figure is judged against the real engine's (the fidelity issue's
targets), as plain functions of the numbers: a real figure is the mean of ≥ 3
repetitions with its 95 % confidence interval (Student's t); a simulated one is a single
deterministic run on the same arrivals.

- **Relative** figures (mean and p50 e2e and TTFT below saturation): the simulated value
  must lie within ``max(10 %, the real CI's half-width)`` of the real mean, capped at
  20 %; p99 figures and saturated points within 20 %; recomputed tokens and preemptions
  within 15 %.
- **Points** (strategy mix, SLO attainment per class, both in %): within ±5 points.
- A real figure whose CI half-width exceeds 15 % of its mean is **inconclusive** — never
  met — until more repetitions narrow it (so the 20 % cap of central figures never binds
  in practice: a CI that would widen the tolerance past 15 % makes the figure
  inconclusive first; both rules are the issue's).
- **Order**: where the real CIs of two policies do not overlap, the simulator must order
  them the same way.
"""

from __future__ import annotations

import enum
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: Relative tolerance below saturation, and its cap (the real CI may widen it up to it).
BASE_TOLERANCE = 0.10
CAP_TOLERANCE = 0.20
#: p99 figures and saturated points.
TAIL_TOLERANCE = 0.20
#: Recomputed tokens and preemptions.
COUNT_TOLERANCE = 0.15
#: Strategy mix and SLO attainment, in percentage points.
POINTS_TOLERANCE = 5.0
#: A real figure with a wider CI (relative half-width) is inconclusive.
MAX_HALF_WIDTH = 0.15
MIN_REPETITIONS = 3


class Verdict(enum.Enum):
    MET = "met"
    MISSED = "missed"
    INCONCLUSIVE = "inconclusive"


class Kind(enum.Enum):
    """Which rule judges a figure."""

    CENTRAL = "central"  # mean / p50 below saturation
    TAIL = "tail"  # p99, or any figure of a saturated point
    COUNT = "count"  # recomputed tokens, preemptions
    POINTS = "points"  # percentages compared in points


@dataclass(frozen=True, slots=True)
class Estimate:
    """The mean of repeated real measurements and its 95 % CI half-width."""

    mean: float
    half_width: float
    n: int

    @property
    def relative_half_width(self) -> float:
        if self.half_width == 0:  # every repetition alike (a count of 0 included)
            return 0.0
        return self.half_width / abs(self.mean) if self.mean else math.inf

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def estimate(samples: Sequence[float]) -> Estimate:
    """Mean and Student-t 95 % half-width of ``samples`` (at least two)."""
    if len(samples) < 2:
        raise ValueError(f"a confidence interval needs at least 2 samples, got {len(samples)}")
    from scipy.stats import t  # on use: the simulator's start-up stays light

    n = len(samples)
    half = float(t.ppf(0.975, n - 1)) * statistics.stdev(samples) / math.sqrt(n)
    return Estimate(statistics.fmean(samples), half, n)


@dataclass(frozen=True, slots=True)
class Judgement:
    figure: str
    kind: Kind
    real: Estimate
    simulated: float
    #: Relative (a fraction of the real mean) or in points, by ``kind``.
    tolerance: float
    #: Relative error (sim − real) / real, or the difference in points.
    error: float
    verdict: Verdict


def judge(figure: str, kind: Kind, real: Estimate, simulated: float) -> Judgement:
    """One figure against its target (see the module docstring)."""
    if kind is Kind.POINTS:
        tolerance = POINTS_TOLERANCE
        error = simulated - real.mean
    else:
        if kind is Kind.CENTRAL:
            tolerance = min(CAP_TOLERANCE, max(BASE_TOLERANCE, real.relative_half_width))
        elif kind is Kind.TAIL:
            tolerance = TAIL_TOLERANCE
        else:
            tolerance = COUNT_TOLERANCE
        error = (simulated - real.mean) / real.mean if real.mean else (
            0.0 if simulated == real.mean else math.inf)
    if real.n < MIN_REPETITIONS or (kind is not Kind.POINTS
                                    and real.relative_half_width > MAX_HALF_WIDTH):
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.MET if abs(error) <= tolerance else Verdict.MISSED
    return Judgement(figure, kind, real, simulated, tolerance, error, verdict)


@dataclass(frozen=True, slots=True)
class OrderCheck:
    figure: str
    first: str
    second: str
    #: The real CIs do not overlap: the order is known.
    separated: bool
    verdict: Verdict


def check_order(figure: str, first: str, real_first: Estimate, sim_first: float,
                second: str, real_second: Estimate, sim_second: float) -> OrderCheck:
    """Where the real CIs separate two policies, the simulator must order them alike;
    where they overlap, the real order is unknown and nothing is claimed."""
    separated = real_first.high < real_second.low or real_second.high < real_first.low
    if not separated:
        return OrderCheck(figure, first, second, False, Verdict.INCONCLUSIVE)
    same = (real_first.mean < real_second.mean) == (sim_first < sim_second)
    return OrderCheck(figure, first, second, True, Verdict.MET if same else Verdict.MISSED)


def format_judgements(rows: Sequence[Judgement]) -> str:
    """A Markdown table: figure, real mean ± half-width, simulated, error, tolerance,
    verdict."""
    lines = ["| figure | real (95 % CI) | simulated | error | tolerance | verdict |",
             "|---|---|---|---|---|---|"]
    for j in rows:
        if j.kind is Kind.POINTS:
            err, tol = f"{j.error:+.1f} pt", f"±{j.tolerance:.0f} pt"
        else:
            err, tol = f"{100 * j.error:+.1f} %", f"±{100 * j.tolerance:.0f} %"
        lines.append(f"| {j.figure} | {j.real.mean:.4g} ± {j.real.half_width:.2g} (n={j.real.n}) "
                     f"| {j.simulated:.4g} | {err} | {tol} | {j.verdict.value} |")
    return "\n".join(lines)
