"""Tool config and executor against a real local aiohttp server (no Ray, no engine)."""

from __future__ import annotations

import asyncio
import gzip
import json
import pickle
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

import replicas.tools as tools
from replicas.tools import (
    EmulatedToolConfig,
    HttpToolConfig,
    ToolCall,
    ToolExecutor,
    ToolFailedError,
    UnknownToolError,
    parse_tools,
)
from tests.unit.fakes import FakeClock, until

MakeExecutor = Callable[..., ToolExecutor]


# --- configuration ------------------------------------------------------------------------

def test_public_names_are_pinned():
    assert sorted(tools.__all__) == [
        "EmulatedToolConfig", "HttpToolConfig", "ToolCall", "ToolConfig", "ToolError",
        "ToolExecutor", "ToolFailedError", "ToolResult", "ToolsConfig", "UnknownToolError",
        "parse_tools"]


def test_config_parses_both_kinds_with_defaults():
    parsed = parse_tools({"weather": {"kind": "http", "url": "https://tools.internal/w"},
                          "search": {"kind": "emulated", "duration_s": 1.5}})
    http, emulated = parsed["weather"], parsed["search"]
    assert isinstance(http, HttpToolConfig) and isinstance(emulated, EmulatedToolConfig)
    assert (http.method, http.timeout_s, http.max_response_bytes, http.on_error) == (
        "POST", 10.0, 65536, "result")
    assert emulated.duration_s == 1.5 and emulated.result_text == ""


@pytest.mark.parametrize("raw", [
    {"w": {"kind": "http", "url": "http://h/", "retries": 3}},
    {"w": {"kind": "emulated", "url": "http://h/"}},
    {"w": {"kind": "http", "url": "ftp://h/"}},
    {"w": {"kind": "http", "url": "file:///etc/passwd"}},
    {"w": {"kind": "http", "url": "h/path"}},
    {"w": {"kind": "http", "url": "http://h:99999/"}},
    {"w": {"kind": "http", "url": "http://h/", "method": "DELETE"}},
    {"w": {"kind": "http", "url": "http://h/", "timeout_s": 0}},
    {"w": {"kind": "http", "url": "http://h/", "max_response_bytes": 16 * 2**20 + 1}},
    {"w": {"kind": "http", "url": "http://h/", "on_error": "ignore"}},
    {"w": {"kind": "http", "url": "http://h/", "headers": {"X-Key": "a\r\nInjected: 1"}}},
    {"w": {"kind": "grpc", "url": "http://h/"}},
    {"w": {"url": "http://h/"}},
    {"bad name": {"kind": "emulated"}},
    {"": {"kind": "emulated"}},
    {"x" * 65: {"kind": "emulated"}},
])
def test_config_rejects(raw: dict[str, Any]):
    with pytest.raises(ValidationError):
        parse_tools(raw)


def test_every_config_field_has_a_description():
    for model in (HttpToolConfig, EmulatedToolConfig, tools.ToolsConfig):
        assert all(f.description for f in model.model_fields.values()), model


# --- a local tool server ------------------------------------------------------------------

async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"body": await request.json(),
                              "key": request.headers.get("X-Api-Key")})


async def _query(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps(dict(request.query), indent=4),
                        content_type="application/json")


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()  # no Content-Length: the client must stop reading
    await response.prepare(request)
    for _ in range(20):
        await response.write(b" " * 1000)
    return response


def _constant(status: int = 200, body: bytes = b"{}",
              headers: dict[str, str] | None = None) -> Callable[..., Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers)
    return handler


#: The requests ``/slow`` holds (the cancellation test watches their connections).
SLOW_REQUESTS: list[web.Request] = []


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[str]:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        SLOW_REQUESTS.append(request)
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/echo", _echo)
    app.router.add_get("/query", _query)
    app.router.add_post("/slow", slow)
    app.router.add_post("/garbage", _constant(body=b"<html>oops</html>"))
    app.router.add_post("/latin1", _constant(body=b'"caf\xe9"'))
    app.router.add_post("/nan", _constant(body=b"[NaN]"))
    app.router.add_post("/error", _constant(status=500))
    app.router.add_post("/redirect", _constant(status=302, headers={"Location": "/echo"}))
    app.router.add_post("/big", _constant(body=b"[" + b"1," * 100 + b"1]"))
    app.router.add_post("/chunked", _chunked)
    app.router.add_post("/gzip", _constant(body=gzip.compress(b"{}"),
                                           headers={"Content-Encoding": "gzip"}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, shutdown_timeout=0.5)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}"
    release.set()
    await runner.cleanup()


@pytest.fixture
async def make_executor() -> AsyncIterator[MakeExecutor]:
    made: list[ToolExecutor] = []

    def make(raw: dict[str, Any], **kwargs: Any) -> ToolExecutor:
        made.append(ToolExecutor(parse_tools(raw), **kwargs))
        return made[-1]

    yield make
    for executor in made:
        await executor.close()


def _http(server: str, path: str, **fields: Any) -> dict[str, Any]:
    return {"w": {"kind": "http", "url": f"{server}{path}", **fields}}


def _call(**arguments: Any) -> ToolCall:
    return ToolCall(name="w", arguments=arguments, call_id="call_1")


# --- HTTP tools ---------------------------------------------------------------------------

async def test_post_sends_name_arguments_and_headers(server: str, make_executor: MakeExecutor):
    executor = make_executor(_http(server, "/echo", headers={"X-Api-Key": "k1"}))
    result = await executor.call(_call(city="Paris", days=3))
    assert result.ok and result.error is None and result.call_id == "call_1"
    assert json.loads(result.content) == {
        "body": {"name": "w", "arguments": {"city": "Paris", "days": 3}, "call_id": "call_1"},
        "key": "k1"}
    assert " " not in result.content and result.duration_s >= 0


async def test_get_sends_arguments_as_query_and_compacts_the_reply(
        server: str, make_executor: MakeExecutor):
    executor = make_executor(_http(server, "/query", method="GET"))
    result = await executor.call(_call(city="Paris", days=3, metric=True, tags=["a"]))
    assert result.ok
    assert result.content == '{"city":"Paris","days":"3","metric":"true","tags":"[\\"a\\"]"}'


@pytest.mark.parametrize(("path", "fields", "reason"), [
    ("/slow", {"timeout_s": 0.2}, "tool 'w' timed out after 0.2 s"),
    ("/garbage", {}, "tool 'w' returned a body that is not JSON"),
    ("/nan", {}, "tool 'w' returned a body that is not JSON"),
    ("/latin1", {}, "tool 'w' returned a body that is not UTF-8"),
    ("/error", {}, "tool 'w' returned HTTP 500"),
    ("/redirect", {}, "tool 'w' returned HTTP 302"),
    ("/big", {"max_response_bytes": 100}, "tool 'w' returned more than 100 bytes"),
    ("/chunked", {"max_response_bytes": 1500}, "tool 'w' returned more than 1500 bytes"),
    ("/gzip", {}, "tool 'w' returned an encoded body (gzip)"),
    ("/missing", {}, "tool 'w' returned HTTP 404"),
])
async def test_failures_become_error_results(server: str, make_executor: MakeExecutor,
                                             path: str, fields: dict[str, Any], reason: str):
    result = await make_executor(_http(server, path, **fields)).call(_call())
    assert (result.ok, result.error) == (False, reason)
    assert json.loads(result.content) == {"error": reason}


async def test_timeout_fails_the_request_with_on_error_fail(
        server: str, make_executor: MakeExecutor):
    executor = make_executor(_http(server, "/slow", timeout_s=0.2, on_error="fail"))
    with pytest.raises(ToolFailedError, match=r"tool 'w' timed out after 0\.2 s") as info:
        await executor.call(_call())
    assert (info.value.status, info.value.code) == (502, "tool_failed")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_names_the_cause_not_the_host(make_executor: MakeExecutor):
    executor = make_executor(_http(f"http://127.0.0.1:{_closed_port()}", "/"))
    result = await executor.call(_call())
    assert result.error == "tool 'w' could not be reached (connection refused)"
    executor = make_executor(_http(f"http://127.0.0.1:{_closed_port()}", "/", on_error="fail"))
    with pytest.raises(ToolFailedError, match="could not be reached"):
        await executor.call(_call())


async def test_unserialisable_arguments_are_a_tool_failure(
        server: str, make_executor: MakeExecutor):
    result = await make_executor(_http(server, "/echo")).call(_call(x=float("nan")))
    assert not result.ok and "arguments that are not JSON" in (result.error or "")


async def test_cancellation_propagates(server: str, make_executor: MakeExecutor):
    """A cancelled call (its client went away) closes its HTTP connection: the tool's
    server sees the request gone instead of answering nobody later."""
    before = len(SLOW_REQUESTS)
    task = asyncio.create_task(make_executor(_http(server, "/slow")).call(_call()))
    await until(lambda: len(SLOW_REQUESTS) > before)  # the request reached the tool
    request = SLOW_REQUESTS[-1]
    assert request.transport is not None and not request.transport.is_closing()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: request.transport is None or request.transport.is_closing())


# --- names --------------------------------------------------------------------------------

async def test_unknown_tool_is_a_400_naming_it_and_the_registered_ones(
        make_executor: MakeExecutor):
    executor = make_executor({"b": {"kind": "emulated"}, "a": {"kind": "emulated"}})
    with pytest.raises(UnknownToolError) as info:
        await executor.call(ToolCall(name="nope", arguments={}, call_id="c"))
    assert (info.value.status, info.value.code) == (400, "unknown_tool")
    assert str(info.value) == "unknown tool 'nope'; registered tools: 'a', 'b'"


def test_check_names_names_every_unknown_one():
    executor = ToolExecutor(parse_tools({"a": {"kind": "emulated"}}))
    assert executor.names == frozenset({"a"})
    executor.check_names(["a", "a"])
    with pytest.raises(UnknownToolError, match=r"^unknown tools 'x', 'y'; registered tools: 'a'$"):
        executor.check_names(["x", "a", "y", "x"])
    with pytest.raises(UnknownToolError, match="registered tools: none"):
        ToolExecutor({}).check_names(["x"])


def test_errors_survive_pickling():
    error = pickle.loads(pickle.dumps(ToolFailedError("tool 'w' returned HTTP 500")))
    assert isinstance(error, ToolFailedError)
    assert (error.status, error.code, error.message) == (502, "tool_failed",
                                                          "tool 'w' returned HTTP 500")


# --- emulated tools -----------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "annotated_s", "slept_s", "content"), [
    ({"duration_s": 2.5, "result_text": "sunny"}, 9.0, 2.5, "sunny"),
    ({}, 1.25, 1.25, "{}"),
    ({}, None, 0.0, "{}"),
])
async def test_emulated_sleeps_on_the_injected_clock(
        fields: dict[str, Any], annotated_s: float | None, slept_s: float, content: str):
    clock, slept = FakeClock(), []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    executor = ToolExecutor(parse_tools({"w": {"kind": "emulated", **fields}}),
                            clock=clock, sleep=sleep)
    result = await executor.call(_call(q=1), emulated_duration_s=annotated_s)
    assert slept == [slept_s]
    assert (result.ok, result.content, result.duration_s) == (True, content, slept_s)
    await executor.close()
