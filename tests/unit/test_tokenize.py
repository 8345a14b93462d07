"""The trace's tokenizer: ``tokenizers`` alone must give what ``AutoTokenizer`` gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.runner import tokenize_fn
from replicas.tiny_model import build_tiny_model

TRACE = Path(__file__).resolve().parents[3] / "shared" / "workloads" / "mars_multi_api.json"


def _texts(o, out: list[str]) -> list[str]:
    if isinstance(o, str):
        out.append(o)
    elif isinstance(o, dict):
        for v in o.values():
            _texts(v, out)
    elif isinstance(o, list):
        for v in o:
            _texts(v, out)
    return out


def test_fast_path_matches_auto_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> None:
    from transformers import AutoTokenizer
    model = build_tiny_model(tmp_path_factory.mktemp("tok"))
    assert (model / "tokenizer.json").is_file()
    texts = _texts(json.loads(TRACE.read_text()), [])[:1500]
    texts += ["", " leading space", "tabs\tand\nnewlines", "ünïcödé ✓ 中文", "a" * 5000]
    fast, auto = tokenize_fn(str(model)), AutoTokenizer.from_pretrained(str(model))
    for text in texts:
        assert fast(text) == auto.encode(text, add_special_tokens=False), text[:80]
