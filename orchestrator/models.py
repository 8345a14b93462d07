"""What the ingress knows of each served model: tokenizer, context length, vocabulary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replicas.config import ReplicaConfig


@dataclass
class ServedModel:
    name: str
    path: Path
    max_model_len: int
    vocab_size: int
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    created: int

    @classmethod
    def load(cls, name: str, replicas: list[ReplicaConfig]) -> ServedModel:
        from transformers import AutoTokenizer

        path = replicas[0].resolved_model_path()
        hf = json.loads((path / "config.json").read_text())
        native = int(hf.get("max_position_embeddings") or hf.get("max_seq_len") or 2048)
        limits = [r.engine.max_model_len or native for r in replicas]
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return cls(name=name, path=path, max_model_len=min(limits),
                   vocab_size=int(hf.get("vocab_size") or len(tokenizer)),
                   tokenizer=tokenizer, created=int(path.stat().st_mtime))
