"""Configuration of the tools a replica may call on behalf of tool-calling requests.

Tools exist only here, keyed by name: a request names a registered tool and supplies its
arguments, never a URL.  ``kind`` selects the implementation: ``http`` calls a configured
endpoint, ``emulated`` waits and returns a canned result (for benchmarks that replay the
tool latencies of a trace, as in API-augmented LLM serving studies).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, RootModel, StringConstraints, field_validator

from augserve_common.strict import StrictModel

TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_RESPONSE_BYTES_LIMIT = 16 * 1024 * 1024
_HEADER_NAME_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789"
                               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

ToolName = Annotated[str, StringConstraints(pattern=TOOL_NAME_PATTERN)]
OnError = Literal["result", "fail"]

_ON_ERROR_DESCRIPTION = (
    "What a failed call does: 'result' puts an error result ({\"error\": reason}) into the "
    "model's context as the tool's reply (OpenAI tool-message style); 'fail' fails the "
    "request with HTTP 502.")


class HttpToolConfig(StrictModel):
    """A tool served by an HTTP endpoint that answers with a JSON body."""

    kind: Literal["http"] = Field(description="Selects the HTTP implementation.")
    url: str = Field(description="Endpoint URL (http:// or https://). POST sends "
                     '{"name", "arguments", "call_id"} as JSON; GET sends the arguments as '
                     "query parameters. Redirects are not followed.")
    method: Literal["GET", "POST"] = Field("POST", description="HTTP method of the call.")
    timeout_s: float = Field(10.0, gt=0, le=600,
                             description="Limit on the whole call, connecting included.")
    max_response_bytes: int = Field(
        65536, ge=1, le=MAX_RESPONSE_BYTES_LIMIT,
        description="Largest accepted response body; reading stops beyond it.")
    on_error: OnError = Field("result", description=_ON_ERROR_DESCRIPTION)
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (e.g. an API key).")
    description: str = Field("", description="What the tool does, for operators and prompts.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"url must start with http:// or https://, got {value!r}")
        if not parts.hostname:
            raise ValueError(f"url has no host: {value!r}")
        _ = parts.port  # raises ValueError on a malformed port
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not name or not set(name) <= _HEADER_NAME_CHARS:
                raise ValueError(f"invalid header name {name!r}")
            if any(ch in header_value for ch in "\r\n\0"):
                raise ValueError(f"header {name!r} has a control character in its value")
        return value


class EmulatedToolConfig(StrictModel):
    """A tool that only takes time: it sleeps, then returns ``result_text``."""

    kind: Literal["emulated"] = Field(description="Selects the emulated implementation.")
    duration_s: float | None = Field(
        None, ge=0, description="Fixed duration of every call; None: the duration the "
        "request's own benchmark annotation gives (0 if it gives none).")
    result_text: str = Field("", description='What a call returns; empty returns "{}".')
    on_error: OnError = Field(
        "result", description="Emulated calls never fail; kept so that every kind is read "
        "the same way and a tool can switch kind without editing other keys.")
    description: str = Field("", description="What the tool does, for operators and prompts.")


ToolConfig = Annotated[HttpToolConfig | EmulatedToolConfig, Field(discriminator="kind")]


class ToolsConfig(RootModel[dict[ToolName, ToolConfig]]):
    """All the tools of a replica, by name (``^[A-Za-z0-9_.-]{1,64}$``)."""

    root: dict[ToolName, ToolConfig] = Field(
        default_factory=dict, description="Tool configurations keyed by tool name.")


def parse_tools(raw: dict[str, Any]) -> dict[str, ToolConfig]:
    """Validate a ``{name: config}`` mapping; raises ``pydantic.ValidationError``."""
    return ToolsConfig.model_validate(raw).root
