"""The HTTP transport of tools: one lazily created aiohttp session, bounded reads.

Every failure becomes an ``HttpToolFailure`` whose reason names the tool and the cause but
not the endpoint: the reason may reach the model's context, and from there the client.
The endpoint and the underlying exception go to the log instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from replicas.tools.config import HttpToolConfig

logger = logging.getLogger(__name__)


class HttpToolFailure(Exception):
    """One failed HTTP tool call; ``reason`` is a sentence fit for the model's context."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _query_params(arguments: Mapping[str, Any]) -> dict[str, str]:
    return {key: value if isinstance(value, str) else json.dumps(value, allow_nan=False)
            for key, value in arguments.items()}


def _connect_cause(exc: aiohttp.ClientConnectorError) -> str:
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "name resolution failed"
    if isinstance(exc.os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    return type(exc.os_error).__name__


class HttpToolClient:
    """Calls HTTP tools; owns one ``aiohttp.ClientSession`` made inside the running loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Undecoded bodies only: the size limit then bounds what is read and kept.
            self._session = aiohttp.ClientSession(auto_decompress=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def call(self, name: str, config: HttpToolConfig, arguments: Mapping[str, Any],
                   call_id: str) -> str:
        """Return the tool's JSON reply, compactly re-serialised; raise ``HttpToolFailure``."""
        label = f"tool {name!r}"
        try:
            body = await self._fetch(name, config, arguments, call_id)
        except TimeoutError as exc:  # before ClientError: aiohttp's timeouts are both
            self._log(name, config, exc)
            raise HttpToolFailure(f"{label} timed out after {config.timeout_s} s") from exc
        except aiohttp.ClientConnectorError as exc:
            self._log(name, config, exc)
            raise HttpToolFailure(
                f"{label} could not be reached ({_connect_cause(exc)})") from exc
        except aiohttp.ClientError as exc:
            self._log(name, config, exc)
            raise HttpToolFailure(f"{label} failed ({type(exc).__name__})") from exc
        return _decode_json(label, body)

    async def _fetch(self, name: str, config: HttpToolConfig, arguments: Mapping[str, Any],
                     call_id: str) -> bytes:
        label = f"tool {name!r}"
        headers = {"Accept": "application/json", "Accept-Encoding": "identity",
                   **config.headers}
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False,
                                  "timeout": aiohttp.ClientTimeout(total=config.timeout_s)}
        try:
            if config.method == "GET":
                kwargs["params"] = _query_params(arguments)
            else:
                kwargs["data"] = json.dumps(
                    {"name": name, "arguments": arguments, "call_id": call_id}, allow_nan=False)
                headers["Content-Type"] = "application/json"
        except (TypeError, ValueError) as exc:
            raise HttpToolFailure(f"{label} got arguments that are not JSON ({exc})") from exc
        async with self._get_session().request(config.method, config.url, **kwargs) as resp:
            if not 200 <= resp.status < 300:
                raise HttpToolFailure(f"{label} returned HTTP {resp.status}")
            encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding != "identity":
                raise HttpToolFailure(f"{label} returned an encoded body ({encoding})")
            return await _read_limited(label, resp, config.max_response_bytes)

    @staticmethod
    def _log(name: str, config: HttpToolConfig, exc: BaseException) -> None:
        logger.warning("tool %s (%s %s) failed: %r", name, config.method, config.url, exc)


async def _read_limited(label: str, resp: aiohttp.ClientResponse, limit_bytes: int) -> bytes:
    too_large = HttpToolFailure(f"{label} returned more than {limit_bytes} bytes")
    if resp.content_length is not None and resp.content_length > limit_bytes:
        raise too_large
    body = bytearray()
    while chunk := await resp.content.read(limit_bytes + 1 - len(body)):
        body += chunk
        if len(body) > limit_bytes:
            raise too_large
    return bytes(body)


def _decode_json(label: str, body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HttpToolFailure(f"{label} returned a body that is not UTF-8") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise HttpToolFailure(f"{label} returned a body that is not JSON") from exc
    return json.dumps(value, separators=(",", ":"))
