"""What the ingress knows of each served model: tokenizer, context length, vocabulary."""

from __future__ import annotations

import json
import time
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
        hf = hf_config(path)
        native = int(hf.get("max_position_embeddings") or hf.get("max_seq_len") or 2048)
        limits = [r.engine.max_model_len or native for r in replicas]
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        created = int(path.stat().st_mtime) if path.is_dir() else int(time.time())
        return cls(name=name, path=path, max_model_len=min(limits),
                   vocab_size=int(hf.get("vocab_size") or len(tokenizer)),
                   tokenizer=tokenizer, created=created)


def hf_config(path: Path) -> dict[str, Any]:
    """The model's ``config.json``: read from a local directory, else fetched by
    transformers from the Hugging Face Hub (``path`` is then a repository id such as
    ``Qwen/Qwen2.5-7B-Instruct``; only the small config and tokenizer files are fetched
    here, the weights are the replicas' business)."""
    if path.is_dir():
        return json.loads((path / "config.json").read_text())
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(str(path))
    text = getattr(config, "text_config", None)  # multimodal models keep these inside
    return {**(text.to_dict() if text is not None else {}), **config.to_dict()}
