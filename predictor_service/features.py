"""Text features: the prompt text cut to a bounded size, and hashed word n-grams."""

from __future__ import annotations

import functools
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


def _ngram_keys(text: str, salt: str, dim: int) -> frozenset[int]:
    words = _WORD.findall(text.lower())
    keys = {zlib.crc32(f"{salt}{w}".encode()) % dim for w in words}
    keys.update(zlib.crc32(f"{salt}{a} {b}".encode()) % dim for a, b in zip(words, words[1:]))
    return frozenset(keys)


def hashed_ngrams(texts: Sequence[str], prompt_tokens: np.ndarray, dim: int) -> sparse.csr_matrix:
    """Rows: L2-normalised presence of hashed word unigrams and bigrams of the whole text
    and, apart, of its last :data:`TAIL_CHARS` characters (``dim`` buckets), then
    log(1 + prompt tokens) / 10 and a bias of 1."""
    dense = dense_tail(prompt_tokens)
    rows = [_text_row(text, dim) for text in texts]
    indices = np.concatenate([r[0] for r in rows] + [np.empty(0, np.int32)])
    data = np.concatenate([r[1] for r in rows] + [np.empty(0)])
    if len(texts):  # the dense columns, last in each row
        indices = np.insert(indices, np.repeat(np.cumsum([len(r[0]) for r in rows]), 2),
                            np.tile([dim, dim + 1], len(texts)).astype(np.int32))
        data = np.insert(data, np.repeat(np.cumsum([len(r[1]) for r in rows]), 2),
                         dense.reshape(-1))
    indptr = np.concatenate([[0], np.cumsum([len(r[0]) + 2 for r in rows])]).astype(np.int32)
    return sparse.csr_matrix((data, indices.astype(np.int32), indptr),
                             shape=(len(texts), dim + 2))


@functools.lru_cache(maxsize=16_384)
def _text_row(text: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted columns, L2-normalised values) of one text's hashed n-grams; cached, as
    every refit featurizes the whole history again."""
    cols = np.array(sorted(_ngram_keys(text, "", dim) | _ngram_keys(tail(text), "tail:", dim)),
                    dtype=np.int32)
    values = np.full(len(cols), 1.0 / np.sqrt(len(cols)) if len(cols) else 0.0)
    cols.setflags(write=False)
    values.setflags(write=False)
    return cols, values


def dense_tail(prompt_tokens: np.ndarray) -> np.ndarray:
    """The two dense columns every model adds: scaled log prompt length and a bias."""
    pt = np.log1p(np.asarray(prompt_tokens, dtype=np.float64)) / 10.0
    return np.stack([pt, np.ones_like(pt)], axis=1)
