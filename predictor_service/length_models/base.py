"""The seam every length model sits behind.

A model is immutable once fitted: ``fit`` returns a new instance (it runs in a worker
thread while the old one keeps answering), and the learner swaps it in."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor_service.config import PredictorConfig
from predictor_service.distributions import LengthDistribution


@dataclass(frozen=True)
class Batch:
    """Prompts to learn from or to predict for (embeddings only for models that use them)."""

    texts: list[str]
    prompt_tokens: np.ndarray
    embeddings: np.ndarray | None = None
    lengths: np.ndarray | None = None  # actual output tokens (training only)


class LengthModel(ABC):
    name: ClassVar[str]
    uses_embeddings: ClassVar[bool] = False

    def __init__(self, config: PredictorConfig) -> None:
        self.config = config

    @abstractmethod
    def fit(self, batch: Batch) -> LengthModel:
        """A new model fitted on ``batch`` (``self`` may serve as a warm start)."""

    @abstractmethod
    def predict(self, batch: Batch) -> list[LengthDistribution]: ...

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Arrays that :meth:`from_state` turns back into this fitted model."""

    @classmethod
    @abstractmethod
    def from_state(cls, config: PredictorConfig, state: dict[str, np.ndarray]) -> LengthModel:
        """Raises KeyError/ValueError on a state it cannot use."""
