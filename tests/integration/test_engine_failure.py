"""Destructive (the next test gets a fresh app): the engines die, new requests get 503 at once, an
in-flight stream ends with an error instead of hanging, and Serve's health check
replaces the replicas, after which requests are served again."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.destructive(rank=1)]  # replaces every replica


def engine_core_pids(app) -> list[int]:
    """The vLLM engine-core processes of the healthy replicas, as each replica reports
    them (``engine_pid``), that are running."""
    pids = [int(r["extra"].get("engine_pid", 0)) for r in app.queue_state()["replicas"]
            if r["healthy"]]
    return [pid for pid in pids if pid and _running(pid)]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def post(app, **extra) -> httpx.Response:
    return httpx.post(f"{app.base_url}/v1/completions", timeout=60,
                      json={"model": app.model, "prompt": "x", "max_tokens": 4, **extra})


def test_dead_engines_give_503_then_replicas_are_replaced(app):
    deadline = time.monotonic() + 60  # replicas report every 0.5 s; let a prior test settle
    while len(pids := engine_core_pids(app)) != 3:
        replicas = [(r["deployment"], r["healthy"], round(r["seconds_since_report"], 1),
                     r["extra"].get("pid"), r["extra"].get("engine_pid"))
                    for r in app.queue_state()["replicas"]]
        assert time.monotonic() < deadline, f"running engine pids {pids}; replicas {replicas}"
        time.sleep(1)
    with httpx.Client(base_url=app.base_url, timeout=60) as c:
        with c.stream("POST", "/v1/completions", json={
                "model": app.model, "prompt": "x", "max_tokens": 1900, "ignore_eos": True,
                "stream": True}) as resp:
            lines = resp.iter_lines()
            next(lines)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            rest = [line for line in lines if line]  # must end, not hang
    assert rest[-1] == "data: [DONE]"
    assert "error" in json.loads(rest[-2][len("data: "):])

    deadline = time.monotonic() + 30
    while True:
        r = post(app)
        # until the replicas have reported their engines dead, a request may be admitted
        # and fail on the replica: that is a 503 too ("replica_failed")
        assert r.status_code == 503, r.text
        if r.json()["error"]["code"] == "no_healthy_replica" or time.monotonic() > deadline:
            break
        assert r.json()["error"]["code"] == "replica_failed"
        time.sleep(0.5)
    assert r.json()["error"]["code"] == "no_healthy_replica" and r.headers["retry-after"]
    assert httpx.get(f"{app.base_url}/health").status_code == 503

    # Health checks fail, Serve starts three new engines one after another; on 2 busy
    # cores that took 300 s once (a hang guard, not a speed target).
    deadline = time.monotonic() + 600
    while httpx.get(f"{app.base_url}/health").status_code != 200:
        assert time.monotonic() < deadline, "replicas were not replaced"
        time.sleep(2)
    r = post(app, ignore_eos=True)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    # /health is 200 with one replica per model; wait for the second replacement too
    while len(engine_core_pids(app)) != 3:
        assert time.monotonic() < deadline, app.queue_state()
        time.sleep(2)
    assert not set(engine_core_pids(app)) & set(pids)
