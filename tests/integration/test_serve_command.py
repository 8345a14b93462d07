"""``augserve serve`` as a user runs it: it deploys, serves, and Ctrl-C (SIGINT) stops
Serve and Ray cleanly (``exclusive_ray``: the shared app is stopped first)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
import yaml

from benchmarks.client_capacity import free_port
from orchestrator.serving import DEFAULT_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.exclusive_ray,
              pytest.mark.usefixtures("exclusive_ray")]


def test_serve_command_serves_and_sigint_stops_everything(tmp_path):
    port = free_port()
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["http_options"]["port"] = port
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "not serving after 300 s"
            time.sleep(2)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": "tiny-llama", "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 8})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        family = psutil.Process(proc.pid).children(recursive=True)
        assert any("raylet" in " ".join(p.cmdline()) for p in family)
        proc.send_signal(signal.SIGINT)  # inherited SIGINT is ignored: as a shell's bg job
        assert proc.wait(timeout=120) == 0
        output = proc.stdout.read()
        assert "stopping Serve and Ray" in output
        deadline = time.monotonic() + 30
        while [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]:
            assert time.monotonic() < deadline, [p.cmdline()[:1] for p in family if p.is_running()]
            time.sleep(1)
    finally:
        if proc.poll() is None:
            proc.kill()
