"""OpenAI response bodies and stream chunks (completions and chat completions)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


@dataclass
class ResponseShape:
    """Everything that is the same in every chunk of one response."""

    kind: str  # "completion" or "chat"
    response_id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def chunk_object(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.response_id, "object": obj, "created": self.created,
                "model": self.model, "choices": choices}

    def chunk(self, text: str, finish_reason: str | None, *, first: bool = False,
              extension: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.kind == "chat":
            delta: dict[str, Any] = {"content": text}
            if first:
                delta["role"] = "assistant"
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        body = self._envelope(self.chunk_object, [choice])
        if extension:
            body["augserve"] = extension
        return body

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        body = self._envelope(self.chunk_object, [])
        body["usage"] = usage
        return body

    def full(self, text: str, finish_reason: str | None, usage: dict[str, int],
             extension: dict[str, Any]) -> dict[str, Any]:
        if self.kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("chat.completion", [choice])
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("text_completion", [choice])
        body["usage"] = usage
        body["augserve"] = extension
        return body


def usage(num_prompt_tokens: int, num_output_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": num_prompt_tokens, "completion_tokens": num_output_tokens,
            "total_tokens": num_prompt_tokens + num_output_tokens}


def finish_reason_of(vllm_reason: str | None) -> str | None:
    """vLLM says "stop"/"length"/"abort"; OpenAI clients know "stop" and "length"."""
    if vllm_reason in (None, "stop", "length"):
        return vllm_reason
    return "stop"
