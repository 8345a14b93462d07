"""One served model's learning state: a bounded history of observed prompts and lengths,
the fitted length model, its version, and what is not yet persisted.

The learner lives on the event loop; :meth:`Learner.fit_job` returns a function that a
worker thread runs on a copy of the history, and :meth:`install` swaps the result in."""

from __future__ import annotations

import base64
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from predictor_service.config import PredictorConfig
from predictor_service.length_models import Batch, LengthModel

Embed = Callable[[list[str]], np.ndarray]


@dataclass
class Sample:
    text: str
    prompt_tokens: int
    output_tokens: int
    embedding: np.ndarray | None = None

    def to_json(self) -> str:
        d = {"t": self.text, "p": self.prompt_tokens, "o": self.output_tokens}
        if self.embedding is not None:
            d["e"] = base64.b64encode(self.embedding.astype(np.float16).tobytes()).decode()
        return json.dumps(d)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Sample:
        """Raises ValueError on anything but a well-formed sample."""
        try:
            d = json.loads(raw)
            emb = (np.frombuffer(base64.b64decode(d["e"]), dtype=np.float16).astype(np.float32)
                   if "e" in d else None)
            sample = cls(str(d["t"]), int(d["p"]), int(d["o"]), emb)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"bad history entry: {exc}") from None
        if sample.prompt_tokens < 0 or sample.output_tokens < 0:
            raise ValueError("bad history entry: negative counts")
        if emb is not None and not np.isfinite(emb).all():
            raise ValueError("bad history entry: non-finite embedding")
        return sample


def parse_history(raw: list[bytes], embedding_dim: int | None) -> tuple[list[Sample], int]:
    """Persisted samples and the number of unusable ones.  An embedding of another size
    (another embedding model, or none in use) is dropped and computed again when needed."""
    out, bad = [], 0
    for r in raw:
        try:
            sample = Sample.from_json(r)
        except ValueError:
            bad += 1
            continue
        if sample.embedding is not None and sample.embedding.shape != (embedding_dim,):
            sample.embedding = None
        out.append(sample)
    return out, bad


def make_batch(samples: list[Sample], embed: Embed | None) -> Batch:
    embeddings = None
    if embed is not None:
        missing = [s for s in samples if s.embedding is None]
        if missing:
            for s, e in zip(missing, embed([s.text for s in missing])):
                s.embedding = e
        embeddings = np.stack([s.embedding for s in samples])
    return Batch([s.text for s in samples],
                 np.array([s.prompt_tokens for s in samples], dtype=np.float64), embeddings,
                 np.array([s.output_tokens for s in samples], dtype=np.float64))


def is_ready(model: LengthModel) -> bool:
    """Usable before any observation (only a classifier loaded from its checkpoint)."""
    return bool(getattr(model, "ready", False))


class Learner:
    def __init__(self, model: str, base: LengthModel, config: PredictorConfig) -> None:
        """``base``: the unfitted model, or one already usable (a classifier checkpoint)."""
        self.model = model
        self.config = config
        self.history: deque[Sample] = deque(maxlen=config.history_size)
        self.fitted: LengthModel | None = base if is_ready(base) else None
        self.unfitted = base
        self.version = 0
        self.pending = 0
        self.observations_total = 0
        self.last_fit_s = 0.0
        self.unsaved: deque[Sample] = deque(maxlen=config.history_size)
        self.state_dirty = False
        self.fitting = False
        self.not_before_s = 0.0  # no refit before (set after a failed one)

    def add(self, samples: list[Sample]) -> None:
        self.history.extend(samples)
        self.unsaved.extend(samples)
        self.pending += len(samples)
        self.observations_total += len(samples)

    def due(self, now_s: float) -> bool:
        if not self.pending or len(self.history) < self.config.min_history:
            return False
        if now_s < self.not_before_s:
            return False
        return (self.pending >= self.config.refit_every
                or now_s - self.last_fit_s >= self.config.refit_interval_s)

    def fit_job(self, embed: Embed | None) -> Callable[[], tuple[LengthModel, np.ndarray]]:
        """A function for a worker thread: the new model, and the absolute errors the
        current model made on the observations it had not yet learned from."""
        samples = list(self.history)
        fresh = samples[len(samples) - min(self.pending, len(samples)):]
        base, current = self.fitted or self.unfitted, self.fitted
        use_embed = embed if base.uses_embeddings else None

        def job() -> tuple[LengthModel, np.ndarray]:
            errors = np.empty(0)
            if current is not None and fresh:
                batch = make_batch(fresh, use_embed)
                predicted = np.array([d.point for d in current.predict(batch)])
                errors = np.abs(predicted - batch.lengths)
            return base.fit(make_batch(samples, use_embed)), errors
        return job

    def install(self, fitted: LengthModel, now_s: float, fitted_pending: int) -> None:
        self.fitted = fitted
        self.version += 1
        self.pending = max(0, self.pending - fitted_pending)
        self.last_fit_s = now_s
        self.state_dirty = True
