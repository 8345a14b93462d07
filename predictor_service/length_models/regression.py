"""Ridge regression on log(1 + length) with the residuals' quantiles as the spread
(shared by hashed-linear and by embedding-knn's fallback)."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import lsqr

from predictor_service.distributions import LEVELS, LengthDistribution, from_sorted_rows


class LogRegressor:
    def __init__(self, weights: np.ndarray, residuals: np.ndarray) -> None:
        self.weights = weights
        self.residuals = residuals  # quantiles of the training residuals at LEVELS

    @classmethod
    def fit(cls, x: np.ndarray | sparse.spmatrix, lengths: np.ndarray, l2: float,
            warm: np.ndarray | None = None) -> LogRegressor:
        y = np.log1p(np.asarray(lengths, dtype=np.float64))
        dim, damp = x.shape[1], np.sqrt(l2)
        w0 = warm if warm is not None and warm.shape == (dim,) else np.zeros(dim)
        # lsqr's own x0 would shrink toward the warm start (its damp acts on x - x0), so
        # repeated refits would fade the ridge and the residual spread; keep the ridge
        # toward 0 by solving for the step d: [x; damp I] d = [y - x w0; -damp w0].
        aug = sparse.vstack([sparse.csr_matrix(x), damp * sparse.identity(dim, format="csr")],
                            format="csr")
        rhs = np.concatenate([y - x @ w0, -damp * w0])
        w = w0 + lsqr(aug, rhs, atol=1e-6, btol=1e-6, iter_lim=500)[0]
        return cls(w, np.asarray(np.quantile(y - x @ w, LEVELS)))

    def predict(self, x: np.ndarray | sparse.spmatrix) -> list[LengthDistribution]:
        """Each row's distribution: expm1(mean + residual quantiles), equally weighted
        (rows sorted, as the residual quantiles are)."""
        mu = np.asarray(x @ self.weights).reshape(-1)
        return from_sorted_rows(np.expm1(np.clip(mu[:, None] + self.residuals[None, :], 0.0, 20.0)))

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}weights": self.weights, f"{prefix}residuals": self.residuals}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str) -> LogRegressor:
        weights = np.asarray(state[f"{prefix}weights"], dtype=np.float64)
        residuals = np.asarray(state[f"{prefix}residuals"], dtype=np.float64)
        if weights.ndim != 1 or residuals.shape != (len(LEVELS),):
            raise ValueError(f"regression state: weights {weights.shape}, residuals "
                             f"{residuals.shape}; expected (d,) and ({len(LEVELS)},)")
        if not (np.isfinite(weights).all() and np.isfinite(residuals).all()):
            raise ValueError("regression state: non-finite values")
        return cls(weights, residuals)
