"""Per-API duration statistics: streaming quantiles and a prior-shrunk estimate.

Plain stdlib; no clock is read here (callers pass measured durations in seconds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def _num(v: Any, what: str, lo: float = -math.inf) -> float:
    """Return ``v`` as a finite float >= lo, or raise ValueError."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
        raise ValueError(f"invalid {what}: {v!r}")
    return float(v)


def _int(v: Any, what: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"invalid {what}: {v!r}")
    return v


def _dict(d: Any, what: str) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a dict, got {type(d).__name__}")
    return d


class P2Quantile:
    """P² streaming estimator of one quantile (Jain & Chlamtac 1985), O(1) memory."""

    def __init__(self, p: float) -> None:
        if not 0.0 < _num(p, "quantile p") < 1.0:
            raise ValueError(f"quantile p must be in (0, 1), got {p!r}")
        self.p = float(p)
        self.count = 0
        self._q: list[float] = []  # marker heights (the raw samples while count < 5)
        self._n: list[int] = []  # actual marker positions, 1-based
        self._np: list[float] = []  # desired marker positions
        self._dn = [0.0, p / 2, p, (1 + p) / 2, 1.0]

    def add(self, x: float) -> None:
        """Add one finite sample (raises ValueError otherwise)."""
        x = _num(x, "sample")
        self.count += 1
        q, n = self._q, self._n
        if self.count <= 5:
            q.append(x)
            q.sort()
            if self.count == 5:
                self._n = [1, 2, 3, 4, 5]
                self._np = [1 + 4 * d for d in self._dn]
            return
        if x < q[0]:
            q[0], k = x, 0
        elif x >= q[4]:
            q[4], k = x, 3
        else:
            k = next(i for i in range(4) if q[i] <= x < q[i + 1])
        for i in range(k + 1, 5):
            n[i] += 1
        for i in range(5):
            self._np[i] += self._dn[i]
        for i in (1, 2, 3):
            d = self._np[i] - n[i]
            if (d >= 1 and n[i + 1] - n[i] > 1) or (d <= -1 and n[i - 1] - n[i] < -1):
                s = 1 if d > 0 else -1
                qp = q[i] + s / (n[i + 1] - n[i - 1]) * (
                    (n[i] - n[i - 1] + s) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
                    + (n[i + 1] - n[i] - s) * (q[i] - q[i - 1]) / (n[i] - n[i - 1])
                )
                if not q[i - 1] < qp < q[i + 1]:  # parabolic step leaves the bracket: go linear
                    qp = q[i] + s * (q[i + s] - q[i]) / (n[i + s] - n[i])
                q[i] = qp
                n[i] += s

    def value(self) -> float | None:
        """Current estimate; exact (linear interpolation) below 5 samples, None when empty."""
        if self.count == 0:
            return None
        if self.count >= 5:
            return self._q[2]
        pos = self.p * (self.count - 1)
        lo, hi = int(pos), min(int(pos) + 1, self.count - 1)
        return self._q[lo] + (pos - lo) * (self._q[hi] - self._q[lo])

    def to_dict(self) -> dict[str, Any]:
        return {"p": self.p, "count": self.count, "q": list(self._q), "n": list(self._n), "np": list(self._np)}

    @classmethod
    def from_dict(cls, d: Any) -> P2Quantile:
        """Rebuild from :meth:`to_dict` output; raises ValueError on malformed data."""
        d = _dict(d, "P2Quantile state")
        try:
            est = cls(d["p"])
            count = _int(d["count"], "count")
            q = [_num(v, "marker height") for v in d["q"]]
            n = [_int(v, "marker position", 1) for v in d["n"]]
            np_ = [_num(v, "desired position") for v in d["np"]]
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed P2Quantile state: {e!r}") from e
        if len(q) != min(count, 5) or any(a > b for a, b in zip(q, q[1:])):
            raise ValueError("malformed P2Quantile state: bad marker heights")
        if count < 5 and (n or np_):
            raise ValueError("malformed P2Quantile state: positions before 5 samples")
        if count >= 5 and (len(n) != 5 or len(np_) != 5 or n[0] != 1 or n[4] != count
                           or any(a >= b for a, b in zip(n, n[1:]))):
            raise ValueError("malformed P2Quantile state: bad marker positions")
        est.count, est._q, est._n, est._np = count, q, n, np_
        return est


@dataclass
class DurationEstimate:
    mean_s: float
    p90_s: float
    samples: int  # observations behind the estimate; 0 for the pure prior


class ApiDurationStats:
    """Count, Welford mean/variance and P² p50/p90 of one API's durations."""

    def __init__(self) -> None:
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0
        self.p50 = P2Quantile(0.5)
        self.p90 = P2Quantile(0.9)

    def add(self, duration_s: float) -> None:
        x = _num(duration_s, "duration_s", 0.0)
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (x - self.mean)
        self.p50.add(x)
        self.p90.add(x)

    @property
    def variance(self) -> float:
        """Sample variance (0.0 below 2 samples)."""
        return self._m2 / (self.count - 1) if self.count > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self._m2,
                "p50": self.p50.to_dict(), "p90": self.p90.to_dict()}

    @classmethod
    def from_dict(cls, d: Any) -> ApiDurationStats:
        """Rebuild from :meth:`to_dict` output; raises ValueError on malformed data."""
        d = _dict(d, "ApiDurationStats state")
        s = cls()
        try:
            s.count = _int(d["count"], "count")
            s.mean = _num(d["mean"], "mean", 0.0)
            s._m2 = _num(d["m2"], "m2", 0.0)
            s.p50 = P2Quantile.from_dict(d["p50"])
            s.p90 = P2Quantile.from_dict(d["p90"])
        except KeyError as e:
            raise ValueError(f"malformed ApiDurationStats state: missing {e}") from e
        if (s.p50.p, s.p90.p) != (0.5, 0.9) or not s.count == s.p50.count == s.p90.count:
            raise ValueError("malformed ApiDurationStats state: inconsistent quantiles")
        return s


class DurationModel:
    """Per-API duration estimates shrunk toward a prior, tracking at most ``max_names`` APIs."""

    def __init__(self, prior_mean_s: float, prior_p90_s: float, prior_weight: float, max_names: int) -> None:
        self.prior_mean_s = _num(prior_mean_s, "prior_mean_s", 0.0)
        self.prior_p90_s = _num(prior_p90_s, "prior_p90_s", 0.0)
        self.prior_weight = _num(prior_weight, "prior_weight", 0.0)  # pseudo-observations
        self.max_names = _int(max_names, "max_names")
        self.dropped_names = 0  # observations dropped because their name did not fit
        self._stats: dict[str, ApiDurationStats] = {}

    def observe(self, name: str, duration_s: float) -> None:
        """Record one duration. Raises ValueError if it is negative, NaN or inf (callers validate).

        A name beyond ``max_names`` is not tracked: the observation is dropped and
        ``dropped_names`` is incremented (per dropped observation).
        """
        x = _num(duration_s, "duration_s", 0.0)
        stats = self._stats.get(name)
        if stats is None:
            if len(self._stats) >= self.max_names:
                self.dropped_names += 1
                return
            stats = self._stats[name] = ApiDurationStats()
        stats.add(x)

    def estimate(self, name: str) -> DurationEstimate:
        """The prior for unseen names, else data shrunk toward the prior by ``prior_weight``."""
        stats = self._stats.get(name)
        if stats is None or stats.count == 0:
            return DurationEstimate(self.prior_mean_s, self.prior_p90_s, 0)
        n, w = stats.count, self.prior_weight
        p90 = stats.p90.value() or 0.0  # never None once count > 0
        return DurationEstimate(
            mean_s=(w * self.prior_mean_s + n * stats.mean) / (w + n),
            p90_s=(w * self.prior_p90_s + n * p90) / (w + n),
            samples=n,
        )

    def names(self) -> list[str]:
        return list(self._stats)

    def merged(self, other: DurationModel) -> DurationModel:
        """Per API name the statistics with more samples, of ``self`` or ``other``; at most
        ``max_names`` names, the busiest kept.  The priors are ``self``'s."""
        best = dict(other._stats)
        for name, stats in self._stats.items():
            if name not in best or stats.count > best[name].count:
                best[name] = stats
        m = DurationModel(self.prior_mean_s, self.prior_p90_s, self.prior_weight, self.max_names)
        m._stats = dict(sorted(best.items(), key=lambda kv: -kv[1].count)[:self.max_names])
        m.dropped_names = self.dropped_names + other.dropped_names
        return m

    def to_dict(self) -> dict[str, Any]:
        return {"dropped_names": self.dropped_names, "names": {k: v.to_dict() for k, v in self._stats.items()}}

    @classmethod
    def from_dict(
        cls, d: Any, prior_mean_s: float, prior_p90_s: float, prior_weight: float, max_names: int
    ) -> DurationModel:
        """Rebuild from :meth:`to_dict` output with the given config.

        Raises ValueError on malformed state or when it holds more than ``max_names`` names.
        """
        m = cls(prior_mean_s, prior_p90_s, prior_weight, max_names)
        d = _dict(d, "DurationModel state")
        try:
            m.dropped_names = _int(d["dropped_names"], "dropped_names")
            names = _dict(d["names"], "names")
        except KeyError as e:
            raise ValueError(f"malformed DurationModel state: missing {e}") from e
        if len(names) > max_names:
            raise ValueError(f"state holds {len(names)} names, more than max_names={max_names}")
        for k, v in names.items():
            if not isinstance(k, str):
                raise ValueError(f"API name must be a string, got {k!r}")
            m._stats[k] = ApiDurationStats.from_dict(v)
        return m
