"""``classifier`` (LAMPS): a 50-bin softmax head on the prompt embedding.

Trained offline by ``augserve predictor train-classifier`` into a ``.npz`` checkpoint that
the server loads (``classifier_checkpoint``), then refined online from observations
(warm-started full-batch Adam on the history)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from predictor_service.distributions import from_bins
from predictor_service.length_models.base import Batch, LengthModel
from predictor_service.length_models.knn import embedding_design
from predictor_service.types import NUM_BINS, bin_of

L2 = 1e-3
STEPS = 200
STEPS_WARM = 60
LEARNING_RATE = 0.05


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train_softmax(x: np.ndarray, labels: np.ndarray, w0: np.ndarray | None,
                  steps: int) -> np.ndarray:
    n, d = x.shape
    w = np.zeros((d, NUM_BINS)) if w0 is None else w0.copy()
    y = np.zeros((n, NUM_BINS))
    y[np.arange(n), labels] = 1.0
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, steps + 1):
        grad = x.T @ (_softmax(x @ w) - y) / n + L2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        w -= LEARNING_RATE * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return w


class BinClassifier(LengthModel):
    name = "classifier"
    uses_embeddings = True

    def __init__(self, config, weights: np.ndarray | None = None) -> None:
        super().__init__(config)
        if weights is None and config.classifier_checkpoint:
            weights = load_checkpoint(config.classifier_checkpoint)
        self.weights = weights

    def fit(self, batch: Batch) -> BinClassifier:
        assert batch.lengths is not None, "a training batch has lengths"
        labels = np.array([bin_of(n) for n in batch.lengths])
        steps = STEPS if self.weights is None else STEPS_WARM
        return BinClassifier(self.config, train_softmax(embedding_design(batch), labels,
                                                        self.weights, steps))

    def predict(self, batch: Batch):
        assert self.weights is not None, "fit first"
        return [from_bins(p) for p in _softmax(embedding_design(batch) @ self.weights)]

    @property
    def ready(self) -> bool:
        return self.weights is not None

    def state(self):
        return {} if self.weights is None else {"weights": self.weights}

    @classmethod
    def from_state(cls, config, state) -> BinClassifier:
        return cls(config, _checked(np.asarray(state["weights"], dtype=np.float64)))


def _checked(w: np.ndarray) -> np.ndarray:
    if w.ndim != 2 or w.shape[1] != NUM_BINS:
        raise ValueError(f"classifier weights have shape {w.shape}, expected (d, {NUM_BINS})")
    if not np.isfinite(w).all():
        raise ValueError("classifier weights: non-finite values")
    return w


def save_checkpoint(path: str | Path, weights: np.ndarray, embedding_model: str) -> None:
    with open(path, "wb") as f:
        np.savez(f, weights=weights, embedding_model=np.array(embedding_model),
                 num_bins=np.array(NUM_BINS))


def load_checkpoint(path: str | Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            return _checked(np.asarray(z["weights"], dtype=np.float64))
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"classifier checkpoint {path}: {exc}") from None
