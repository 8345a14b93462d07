"""The SLO classes of a replay: their targets and the share of requests in each.

The targets are the server's own (``GET /v1/admin/slo_classes``, milliseconds, null for
no target); a server without that route is assumed to use the default classes of
:func:`orchestrator.config.default_slo_classes`, and the results say which source was
used.  The shares may only name classes the server defines.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.client import EndpointError

DEFAULT_SLO_SHARES = {"interactive": 0.2, "standard": 0.5, "batch": 0.3}

#: Class name -> {"ttft_s": target or None, "e2e_s": target or None}.
Targets = dict[str, dict[str, float | None]]


class SettingsError(ValueError):
    """A flag or bench-block value that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class SLOTargets:
    targets_s: Targets
    source: str  # "server" (GET /v1/admin/slo_classes) or "defaults"
    note: str | None = None  # why the defaults were used

    def describe(self) -> str:
        if self.source == "server":
            return "the server's classes"
        return f"the default classes (the server does not list its own: {self.note})"


def slo_targets_s() -> Targets:
    """The server's default SLO classes, in seconds."""
    from orchestrator.config import default_slo_classes
    return {name: {"ttft_s": c.ttft_ms / 1000 if c.ttft_ms else None,
                   "e2e_s": c.e2e_ms / 1000 if c.e2e_ms else None}
            for name, c in default_slo_classes().items()}


def _seconds(entry: dict[str, Any], key: str, name: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise EndpointError(f"/v1/admin/slo_classes: class {name!r} has {key}={value!r}, "
                            "expected a positive number of milliseconds or null")
    return value / 1000


def targets_from_response(classes: dict[str, Any]) -> Targets:
    """The ``slo_classes`` object of ``GET /v1/admin/slo_classes`` (milliseconds) in seconds."""
    out: Targets = {}
    for name, entry in classes.items():
        if not isinstance(entry, dict):
            raise EndpointError(f"/v1/admin/slo_classes: class {name!r} is not an object")
        out[name] = {"ttft_s": _seconds(entry, "ttft_ms", name),
                     "e2e_s": _seconds(entry, "e2e_ms", name)}
    return out


def fetch_slo_targets(url: str, timeout_s: float = 5.0,
                      transport: httpx.BaseTransport | None = None) -> SLOTargets:
    """The server's SLO targets; its default classes when it does not expose them (no
    such route, no answer, or an answer without ``slo_classes``)."""
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as client:
            r = client.get(f"{url.rstrip('/')}/v1/admin/slo_classes")
    except httpx.HTTPError as exc:
        return SLOTargets(slo_targets_s(), "defaults", f"{type(exc).__name__}: {exc}")
    if r.status_code != 200:
        return SLOTargets(slo_targets_s(), "defaults", f"GET /v1/admin/slo_classes answered "
                          f"{r.status_code}")
    try:
        classes = r.json().get("slo_classes")
    except (ValueError, AttributeError):
        classes = None
    if not isinstance(classes, dict) or not classes:
        return SLOTargets(slo_targets_s(), "defaults",
                          "GET /v1/admin/slo_classes answered without slo_classes")
    return SLOTargets(targets_from_response(classes), "server")


def parse_shares(text: str) -> dict[str, float]:
    """``interactive=0.2,batch=0.8`` -> {"interactive": 0.2, "batch": 0.8}."""
    shares = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            shares[name.strip()] = float(value)
        except ValueError:
            raise SettingsError(f"--slo-shares: {part!r} is not CLASS=SHARE (e.g. "
                                "interactive=0.2,standard=0.5,batch=0.3)") from None
    return shares


def check_shares(shares: dict[str, float], classes: Iterable[str], where: str) -> None:
    """Refuse shares that name a class not in ``classes`` (``where`` says whose they are)."""
    known = sorted(classes)
    unknown = sorted(set(shares) - set(known))
    if unknown:
        raise SettingsError(f"SLO shares name unknown class(es) {unknown}; {where}: "
                            f"{', '.join(known)}")
