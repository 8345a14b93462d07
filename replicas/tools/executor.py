"""Server-side execution of the tool calls of tool-calling (API-augmented) requests.

A request may only name tools registered in the replica's configuration; the executor runs
one call at a time per ``call()`` (callers run several concurrently if they wish).  A
failed call either becomes an error result that goes back into the model's context, as
an OpenAI ``tool`` message would, or fails the request with ``ToolFailedError`` (HTTP 502),
according to the tool's ``on_error``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, assert_never

from replicas.tools.config import EmulatedToolConfig, HttpToolConfig, ToolConfig
from replicas.tools.http import HttpToolClient, HttpToolFailure


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for: a registered tool name and its JSON arguments."""

    name: str
    arguments: dict[str, Any]
    call_id: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one call returned; ``content`` goes into the model's context either way."""

    call_id: str
    name: str
    content: str
    ok: bool
    error: str | None
    duration_s: float


class ToolError(Exception):
    """Base of tool errors that end a request; carries its HTTP ``status`` and ``code``.
    Plain picklable exceptions (message only), so they survive crossing Ray processes."""

    status: int = 500
    code: str = "tool_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownToolError(ToolError):
    """The request named a tool that is not registered."""

    status = 400
    code = "unknown_tool"


class ToolFailedError(ToolError):
    """A tool with ``on_error="fail"`` failed."""

    status = 502
    code = "tool_failed"


def _quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names) or "none"


class ToolExecutor:
    """Runs calls of the configured tools; ``close()`` releases the HTTP session."""

    def __init__(self, tools: Mapping[str, ToolConfig], *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._tools: Mapping[str, ToolConfig] = MappingProxyType(dict(tools))
        self._clock = clock
        self._sleep = sleep
        self._http = HttpToolClient()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._tools)

    def check_names(self, names: Iterable[str]) -> None:
        """Raise ``UnknownToolError`` naming every unregistered name, in the given order."""
        unknown = [name for name in dict.fromkeys(names) if name not in self._tools]
        if unknown:
            noun = "tool" if len(unknown) == 1 else "tools"
            raise UnknownToolError(f"unknown {noun} {_quoted(unknown)}; registered tools: "
                                   f"{_quoted(sorted(self._tools))}")

    async def call(self, call: ToolCall, *, emulated_duration_s: float | None = None
                   ) -> ToolResult:
        """Run one call.  Failures become an error result or ``ToolFailedError`` (per the
        tool's ``on_error``); ``emulated_duration_s`` is the request's annotated duration."""
        self.check_names([call.name])
        config = self._tools[call.name]
        start_s = self._clock()
        try:
            content = await self._run(config, call, emulated_duration_s)
        except HttpToolFailure as exc:
            if config.on_error == "fail":
                raise ToolFailedError(exc.reason) from exc
            return ToolResult(call.call_id, call.name, json.dumps({"error": exc.reason}),
                              ok=False, error=exc.reason, duration_s=self._clock() - start_s)
        return ToolResult(call.call_id, call.name, content, ok=True, error=None,
                          duration_s=self._clock() - start_s)

    async def _run(self, config: ToolConfig, call: ToolCall,
                   emulated_duration_s: float | None) -> str:
        match config:
            case HttpToolConfig():
                return await self._http.call(call.name, config, call.arguments, call.call_id)
            case EmulatedToolConfig():
                duration_s = config.duration_s
                if duration_s is None:
                    duration_s = max(0.0, emulated_duration_s or 0.0)
                await self._sleep(duration_s)
                return config.result_text or "{}"
            case _:
                assert_never(config)

    async def close(self) -> None:
        await self._http.close()
