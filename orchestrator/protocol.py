"""OpenAI-compatible request models and their model-independent validation.

Unknown top-level fields are ignored (as OpenAI's own SDKs send fields that a server may
not know); known fields are strictly typed, and features this server does not implement
(``n`` > 1, ``logprobs``, ``echo``, ``best_of``, ``suffix``) are refused with a 400 naming
the field rather than silently ignored.  Extension fields: ``priority``, ``slo``,
``session_id`` (carried to the replica), and vLLM's ``min_tokens``, ``ignore_eos``,
``top_k``, ``repetition_penalty``, ``stop_token_ids``, ``skip_special_tokens``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import InvalidRequestError

INT32_MAX = 2**31 - 1
_TOKEN_ID = re.compile(r"[0-9]{1,10}")


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class SLOTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ttft_ms: int | None = Field(None, ge=1, le=86_400_000)
    e2e_ms: int | None = Field(None, ge=1, le=86_400_000)

    @model_validator(mode="after")
    def _one(self) -> SLOTarget:
        if self.ttft_ms is None and self.e2e_ms is None:
            raise ValueError("give ttft_ms, e2e_ms or both")
        return self


MAX_AUG_TURNS = 64
MAX_API_DURATION_S = 600.0
MAX_API_TOKENS = 8192


class AugTurnModel(BaseModel):
    """One turn of an augmented request (the trace's shape)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    generate_tokens: int = Field(..., ge=1, description="Tokens this turn generates.")
    api_name: str | None = Field(None, min_length=1, max_length=128,
                                 description="API called after the turn; none on the last.")
    api_duration_s: float | None = Field(None, ge=0.0, le=MAX_API_DURATION_S)
    api_tokens: int | None = Field(None, ge=0, le=MAX_API_TOKENS)

    @model_validator(mode="after")
    def _api_all_or_none(self) -> AugTurnModel:
        given = [self.api_name is not None, self.api_duration_s is not None,
                 self.api_tokens is not None]
        if any(given) and not all(given):
            raise ValueError("give api_name, api_duration_s and api_tokens together, or none")
        return self


class StreamOptions(_Base):
    include_usage: bool = False


class _SamplingFields(_Base):
    model: str = Field(..., min_length=1, max_length=256)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1, le=INT32_MAX)
    min_tokens: int = Field(0, ge=0, le=INT32_MAX)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = Field(None, max_length=64)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    ignore_eos: bool = False
    logit_bias: dict[str, float] | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=2.0)
    skip_special_tokens: bool = True
    user: str | None = None
    # augserve extensions
    priority: int = Field(0, ge=-INT32_MAX, le=INT32_MAX)
    slo: str | SLOTarget | None = None
    session_id: str | None = Field(None, min_length=1, max_length=256)
    augmentation: list[AugTurnModel] | None = Field(None, min_length=1, max_length=MAX_AUG_TURNS)

    @model_validator(mode="after")
    def _unsupported(self) -> _SamplingFields:
        if self.n != 1:
            raise _field_error("n", "only n=1 is supported")
        if self.logit_bias is not None:
            for key, value in self.logit_bias.items():
                if not _TOKEN_ID.fullmatch(key):
                    raise _field_error("logit_bias", f"key {key!r} is not a token id")
                if not -100.0 <= value <= 100.0:
                    raise _field_error("logit_bias", f"bias {value} for token {key} is outside [-100, 100]")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(_SamplingFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(None, ge=1)
    logprobs: int | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @model_validator(mode="after")
    def _completion_only(self) -> CompletionRequest:
        for name in ("logprobs", "suffix"):
            if getattr(self, name) is not None:
                raise _field_error(name, f"{name} is not supported")
        if self.echo:
            raise _field_error("echo", "echo is not supported")
        if self.best_of not in (None, 1):
            raise _field_error("best_of", "only best_of=1 is supported")
        if isinstance(self.prompt, list) and self.prompt and isinstance(self.prompt[0], (str, list)):
            if len(self.prompt) != 1:
                raise _field_error("prompt", "batched prompts are not supported; send one prompt")
        return self

    def single_prompt(self) -> str | list[int]:
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            return prompt[0]  # type: ignore[return-value]
        return prompt  # type: ignore[return-value]


class TextPart(_Base):
    type: Literal["text"]
    text: str


class FunctionCall(_Base):
    name: str = Field(..., min_length=1)
    arguments: str | dict[str, Any]


class ToolCall(_Base):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Base):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str | None:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content


class FunctionDef(_Base):
    name: str = Field(..., min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDef(_Base):
    type: Literal["function"]
    function: FunctionDef


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = None

    @model_validator(mode="after")
    def _chat_only(self) -> ChatCompletionRequest:
        if self.logprobs or self.top_logprobs is not None:
            raise _field_error("logprobs", "logprobs are not supported")
        if self.max_tokens is not None and self.max_completion_tokens is not None \
                and self.max_tokens != self.max_completion_tokens:
            raise _field_error("max_completion_tokens", "max_tokens and max_completion_tokens differ")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def template_messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in self.messages:
            item: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role,
                                    "content": m.text()}
            if m.tool_calls:
                item["tool_calls"] = [
                    {"id": c.id, "type": "function",
                     "function": {"name": c.function.name, "arguments": c.function.arguments}}
                    for c in m.tool_calls]
            if m.name is not None:
                item["name"] = m.name
            if m.tool_call_id is not None:
                item["tool_call_id"] = m.tool_call_id
            out.append(item)
        return out

    def template_tools(self) -> list[dict[str, Any]] | None:
        if not self.tools or self.tool_choice == "none":
            return None
        return [t.model_dump(exclude_none=True) for t in self.tools]


class _FieldError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _field_error(param: str, message: str) -> _FieldError:
    return _FieldError(param, message)


def parse_request(model_cls: type[_Base], body: Any) -> Any:
    """Validate a decoded JSON body; raise :class:`InvalidRequestError` naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object", code="invalid_type")
    try:
        return model_cls.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # For unions pydantic reports one error per member; the deepest one is the member
        # the client meant (e.g. ``slo.ttft_ms`` rather than "slo is not a string").
        err = max(errors, key=lambda e: len([p for p in e["loc"] if not _is_union_tag(p)]))
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _FieldError):
            raise InvalidRequestError(f"{ctx_error.param}: {ctx_error}", param=ctx_error.param) from None
        param = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        kind = err["type"]
        code = "missing_required_parameter" if kind == "missing" else "invalid_value"
        message = f"{param}: {err['msg']}" if param else err["msg"]
        raise InvalidRequestError(message, param=param or None, code=code) from None


def _is_union_tag(part: object) -> bool:
    """Pydantic puts union member names (``str``, ``list[int]``, ``SLOTarget``) in ``loc``."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in
                                      {"str", "int", "float", "bool", "dict", "list", "none"})
