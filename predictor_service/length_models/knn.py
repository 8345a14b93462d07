"""``embedding-knn`` (ALISE): the lengths of the most similar past prompts, weighted by a
softmax over cosine similarity; a ridge regression on the embedding answers when even the
nearest past prompt is too far."""

from __future__ import annotations

import numpy as np

from predictor_service.distributions import from_samples
from predictor_service.features import dense_tail
from predictor_service.length_models.base import Batch, LengthModel
from predictor_service.length_models.regression import LogRegressor

L2 = 1.0


def embedding_design(batch: Batch) -> np.ndarray:
    return np.hstack([batch.embeddings, dense_tail(batch.prompt_tokens)])


class EmbeddingKnn(LengthModel):
    name = "embedding-knn"
    uses_embeddings = True

    def __init__(self, config, keys: np.ndarray | None = None, lengths: np.ndarray | None = None,
                 regressor: LogRegressor | None = None) -> None:
        super().__init__(config)
        self.keys, self.lengths, self.regressor = keys, lengths, regressor

    def fit(self, batch: Batch) -> EmbeddingKnn:
        keys = np.asarray(batch.embeddings, dtype=np.float32)
        lengths = np.asarray(batch.lengths, dtype=np.float64)
        warm = self.regressor.weights if self.regressor else None
        return EmbeddingKnn(self.config, keys, lengths,
                            LogRegressor.fit(embedding_design(batch), lengths, L2, warm))

    def predict(self, batch: Batch):
        assert self.keys is not None and self.lengths is not None and self.regressor is not None, (
            "fit first")
        cfg = self.config
        sims = np.asarray(batch.embeddings, dtype=np.float32) @ self.keys.T
        k = min(cfg.knn_k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        fallback = self.regressor.predict(embedding_design(batch))
        out = []
        for row, idx in enumerate(top):
            s = sims[row, idx].astype(np.float64)
            if s.max() < cfg.knn_min_similarity:
                out.append(fallback[row])
                continue
            w = np.exp((s - s.max()) / cfg.knn_temperature)
            out.append(from_samples(self.lengths[idx], w))
        return out

    def state(self):
        if self.keys is None:
            return {}
        return {"keys": self.keys, "lengths": self.lengths, **self.regressor.state("reg_")}

    @classmethod
    def from_state(cls, config, state) -> EmbeddingKnn:
        keys = np.asarray(state["keys"], dtype=np.float32)
        lengths = np.asarray(state["lengths"], dtype=np.float64)
        if keys.ndim != 2 or lengths.shape != (len(keys),) or not len(keys):
            raise ValueError("embedding-knn state: keys and lengths do not match")
        if not (np.isfinite(keys).all() and np.isfinite(lengths).all()):
            raise ValueError("embedding-knn state: non-finite values")
        reg = LogRegressor.from_state(state, "reg_")
        if reg.weights.shape != (keys.shape[1] + 2,):
            raise ValueError(f"embedding-knn state: regression weights {reg.weights.shape} "
                             f"do not fit keys of dimension {keys.shape[1]}")
        return cls(config, keys, lengths, reg)
