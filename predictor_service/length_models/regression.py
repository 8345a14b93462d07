"""Ridge regression on log(1 + length) with the residuals' quantiles as the spread
(shared by hashed-linear and by embedding-knn's fallback)."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import lsqr

from predictor_service.distributions import LEVELS, LengthDistribution, from_samples


class LogRegressor:
    def __init__(self, weights: np.ndarray, residuals: np.ndarray) -> None:
        self.weights = weights
        self.residuals = residuals  # quantiles of the training residuals at LEVELS

    @classmethod
    def fit(cls, x: np.ndarray | sparse.spmatrix, lengths: np.ndarray, l2: float,
            warm: np.ndarray | None = None) -> LogRegressor:
        y = np.log1p(np.asarray(lengths, dtype=np.float64))
        x0 = warm if warm is not None and warm.shape == (x.shape[1],) else None
        w = lsqr(x, y, damp=np.sqrt(l2), x0=x0, atol=1e-6, btol=1e-6, iter_lim=500)[0]
        return cls(w, np.quantile(y - x @ w, LEVELS))

    def predict(self, x: np.ndarray | sparse.spmatrix) -> list[LengthDistribution]:
        mu = np.asarray(x @ self.weights).reshape(-1)
        return [from_samples(np.expm1(np.clip(m + self.residuals, 0.0, 20.0))) for m in mu]

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}weights": self.weights, f"{prefix}residuals": self.residuals}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str) -> LogRegressor:
        return cls(np.asarray(state[f"{prefix}weights"], dtype=np.float64),
                   np.asarray(state[f"{prefix}residuals"], dtype=np.float64))
