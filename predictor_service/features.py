"""Text features: the prompt text cut to a bounded size, and hashed word n-grams."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np
from scipy import sparse

_WORD = re.compile(r"\w+|[^\w\s]")


def prompt_text(text: str, token_ids: Sequence[int], max_chars: int) -> str:
    """The text the models see: the prompt text, or the token ids as words when there is
    none; beyond ``max_chars`` the first and last halves are kept."""
    if not text:
        text = " ".join(f"t{t}" for t in token_ids)
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + " … " + text[-half:]
    return text


#: Characters at the end of a prompt that get features of their own: in an agent's
#: context the latest instruction or API result says most about the next turn.
TAIL_CHARS = 256


def tail(text: str, num_chars: int = TAIL_CHARS) -> str:
    return text[-num_chars:]


def _ngram_keys(text: str, salt: str, dim: int) -> set[int]:
    words = _WORD.findall(text.lower())
    keys = {zlib.crc32(f"{salt}{w}".encode()) % dim for w in words}
    keys.update(zlib.crc32(f"{salt}{a} {b}".encode()) % dim for a, b in zip(words, words[1:]))
    return keys


def hashed_ngrams(texts: Sequence[str], prompt_tokens: np.ndarray, dim: int) -> sparse.csr_matrix:
    """Rows: L2-normalised presence of hashed word unigrams and bigrams of the whole text
    and, apart, of its last :data:`TAIL_CHARS` characters (``dim`` buckets), then
    log(1 + prompt tokens) / 10 and a bias of 1."""
    dense = dense_tail(prompt_tokens)
    indptr, indices, data = [0], [], []
    for text, extra in zip(texts, dense):
        cols = sorted(_ngram_keys(text, "", dim) | _ngram_keys(tail(text), "tail:", dim))
        norm = 1.0 / np.sqrt(len(cols)) if cols else 0.0
        indices.extend(cols)
        indices.extend((dim, dim + 1))
        data.extend([norm] * len(cols))
        data.extend(extra)
        indptr.append(len(indices))
    return sparse.csr_matrix((np.array(data), np.array(indices, dtype=np.int32),
                              np.array(indptr, dtype=np.int32)), shape=(len(texts), dim + 2))


def dense_tail(prompt_tokens: np.ndarray) -> np.ndarray:
    """The two dense columns every model adds: scaled log prompt length and a bias."""
    pt = np.log1p(np.asarray(prompt_tokens, dtype=np.float64)) / 10.0
    return np.stack([pt, np.ones_like(pt)], axis=1)
