"""Offline training of the ``classifier`` checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from predictor_service.config import PredictorConfig
from predictor_service.embedding import EMBEDDING_MODEL, Embedder
from predictor_service.features import prompt_text
from predictor_service.learner import Sample, make_batch
from predictor_service.length_models.classifier import BinClassifier, save_checkpoint


def train_classifier(prompts: list[str], prompt_tokens: list[int], output_tokens: list[int],
                     out: str | Path, config: PredictorConfig | None = None) -> dict:
    """Fit the 50-bin head on (prompt, length) pairs and write the checkpoint."""
    if not prompts:
        raise ValueError("no training samples")
    config = config or PredictorConfig(length_model="classifier")
    embedder = Embedder(config.embed_max_tokens, cache_size=0)
    samples = [Sample(prompt_text(p, (), config.max_prompt_chars), n, o)
               for p, n, o in zip(prompts, prompt_tokens, output_tokens)]
    model = BinClassifier(config.model_copy(update={"classifier_checkpoint": None}))
    fitted = model.fit(make_batch(samples, embedder.embed))
    assert fitted.weights is not None, "fit gives weights"
    save_checkpoint(out, fitted.weights, EMBEDDING_MODEL)
    predicted = np.array([d.point for d in fitted.predict(make_batch(samples, embedder.embed))])
    return {"samples": len(samples), "checkpoint": str(out),
            "train_mae_tokens": float(np.mean(np.abs(predicted - np.array(output_tokens))))}
