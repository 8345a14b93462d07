"""``hashed-linear``: hashed word n-grams plus prompt length, ridge regression on log length.
No model files; the default when the embedding package is not installed."""

from __future__ import annotations


from predictor_service.features import hashed_ngrams
from predictor_service.length_models.base import Batch, LengthModel
from predictor_service.length_models.regression import LogRegressor

HASH_DIM = 1 << 18
L2 = 0.05  # chosen on the trace (docs/predictor.md): 0.01–0.1 are within 1 %


class HashedLinear(LengthModel):
    name = "hashed-linear"

    def __init__(self, config, regressor: LogRegressor | None = None) -> None:
        super().__init__(config)
        self.regressor = regressor

    def fit(self, batch: Batch) -> HashedLinear:
        assert batch.lengths is not None, "a training batch has lengths"
        x = hashed_ngrams(batch.texts, batch.prompt_tokens, HASH_DIM)
        warm = self.regressor.weights if self.regressor else None
        return HashedLinear(self.config, LogRegressor.fit(x, batch.lengths, L2, warm))

    def predict(self, batch: Batch):
        assert self.regressor is not None, "fit first"
        return self.regressor.predict(hashed_ngrams(batch.texts, batch.prompt_tokens, HASH_DIM))

    def state(self):
        return self.regressor.state("") if self.regressor else {}

    @classmethod
    def from_state(cls, config, state) -> HashedLinear:
        reg = LogRegressor.from_state(state, "")
        if reg.weights.shape != (HASH_DIM + 2,):
            raise ValueError(f"hashed-linear weights have shape {reg.weights.shape}")
        return cls(config, reg)
