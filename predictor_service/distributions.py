"""Length distributions over LAMPS's 50 bins of 10 tokens, from weighted samples or from
bin probabilities.  The point estimate is the median (it minimises the absolute error)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from predictor_service.types import BIN_WIDTH_TOKENS, NUM_BINS

_Z90 = 1.2815515655446004
#: Quantile levels used to represent a continuous distribution by samples.
LEVELS = (np.arange(99) + 0.5) / 99.0


@dataclass(frozen=True)
class LengthDistribution:
    point: float
    p50: float
    p90: float
    bin_probs: np.ndarray  # shape (NUM_BINS,), sums to 1

    def capped(self, max_tokens: int) -> LengthDistribution:
        """The distribution of min(length, max_tokens) (max_tokens 0: unchanged)."""
        if max_tokens <= 0:
            return self
        probs = self.bin_probs.copy()
        last = min(NUM_BINS - 1, max_tokens // BIN_WIDTH_TOKENS)
        probs[last] += probs[last + 1:].sum()
        probs[last + 1:] = 0.0
        cap = float(max_tokens)
        return LengthDistribution(min(self.point, cap), min(self.p50, cap), min(self.p90, cap), probs)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    order = np.argsort(values, kind="stable")
    v, w = values[order], weights[order]
    cdf = np.cumsum(w)
    idx = int(np.searchsorted(cdf, q * cdf[-1], side="left"))
    return float(v[min(idx, len(v) - 1)])


def from_samples(values: np.ndarray, weights: np.ndarray | None = None) -> LengthDistribution:
    values = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    weights = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    if total <= 0 or not np.isfinite(total):
        weights, total = np.ones_like(values), float(len(values))
    bins = np.minimum((values // BIN_WIDTH_TOKENS).astype(np.int64), NUM_BINS - 1)
    probs = np.bincount(bins, weights=weights, minlength=NUM_BINS) / total
    p50 = weighted_quantile(values, weights, 0.5)
    return LengthDistribution(p50, p50, weighted_quantile(values, weights, 0.9), probs)


def from_sorted_rows(values: np.ndarray) -> list[LengthDistribution]:
    """:func:`from_samples` of each row, equally weighted, for a whole batch at once
    (each row sorted ascending and not negative)."""
    rows, n = values.shape
    bins = np.minimum(values // BIN_WIDTH_TOKENS, NUM_BINS - 1).astype(np.int64)
    probs = np.zeros((rows, NUM_BINS))
    np.add.at(probs, (np.repeat(np.arange(rows), n), bins.ravel()), 1.0 / n)
    i50, i90 = (int(np.ceil(q * n)) - 1 for q in (0.5, 0.9))  # as weighted_quantile picks
    return [LengthDistribution(float(v[i50]), float(v[i50]), float(v[i90]), p)
            for v, p in zip(values, probs)]


def from_bins(probs: np.ndarray) -> LengthDistribution:
    """Quantiles interpolated inside bins (the open last bin is read as 10 tokens wide)."""
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum()
    cdf = np.cumsum(probs)

    def quantile(q: float) -> float:
        i = int(np.searchsorted(cdf, q, side="left"))
        i = min(i, NUM_BINS - 1)
        below = cdf[i - 1] if i else 0.0
        frac = (q - below) / probs[i] if probs[i] > 0 else 0.5
        return BIN_WIDTH_TOKENS * (i + float(np.clip(frac, 0.0, 1.0)))

    p50 = quantile(0.5)
    return LengthDistribution(p50, p50, quantile(0.9), probs)


def lognormal(p50: float, p90: float) -> LengthDistribution:
    """A log-normal with the given median and 90th percentile (the prior)."""
    sigma = max(np.log(max(p90, p50) / p50) / _Z90, 1e-6)
    from scipy.stats import norm
    return from_samples(p50 * np.exp(sigma * norm.ppf(LEVELS)))
