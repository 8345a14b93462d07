"""Where a benchmark's CPU went: the replicas' own processes (their Python — policy,
turn runner, server), the vLLM engine-core processes, and the whole machine, over one
run.  On a machine with fewer cores than busy processes these compete: an engine step
then costs more than its shape alone says, which is what the fidelity figures need to
know.  Process CPU times come from ``psutil`` (user + system); an engine counts with every
process below its engine core (vLLM's ``VLLM::Worker`` runs the model); a process that
ended before the run did counts what was last read of it."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU seconds over ``wall_s`` seconds of one run."""

    wall_s: float
    #: The replica processes' (for a direct replay: the benchmark's own process).
    replica_cpu_s: float
    #: The vLLM engine-core processes' and their workers'.
    engine_cpu_s: float
    #: Every process on the machine (all cores' non-idle time).
    machine_busy_s: float
    num_cpus: int

    @property
    def other_cpu_s(self) -> float:
        """Everything else on the machine (Ray, Serve's proxy and controller, the ingress,
        queue manager and predictor, the benchmark client, any other process)."""
        return max(0.0, self.machine_busy_s - self.replica_cpu_s - self.engine_cpu_s)

    @property
    def machine_busy_share(self) -> float:
        """The machine's cores' busy share over the run, 0–1."""
        return self.machine_busy_s / (self.wall_s * self.num_cpus) if self.wall_s > 0 else 0.0

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "other_cpu_s": self.other_cpu_s,
                                    "machine_busy_share": self.machine_busy_share}, indent=2))

    @classmethod
    def read(cls, path: Path) -> CpuUse:
        d = json.loads(path.read_text())
        try:
            return cls(float(d["wall_s"]), float(d["replica_cpu_s"]), float(d["engine_cpu_s"]),
                       float(d["machine_busy_s"]), int(d["num_cpus"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a CPU-use file: {exc}") from None


def _process_cpu_s(pid: int) -> float | None:
    try:
        t = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return float(t.user + t.system)


def _with_descendants(pids: Iterable[int]) -> list[int]:
    out = []
    for pid in pids:
        out.append(pid)
        try:
            out.extend(c.pid for c in psutil.Process(pid).children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return out


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return float(sum(t) - idle)


class CpuMeter:
    """Started before a run, stopped after it: :class:`CpuUse` of the given processes."""

    def __init__(self, replica_pids: Iterable[int], engine_pids: Iterable[int]) -> None:
        self._replica = [p for p in replica_pids if p > 0]
        self._engine = _with_descendants(p for p in engine_pids if p > 0)
        self._last: dict[int, float] = {}
        self._first: dict[int, float] = {}
        self._start_wall_s = 0.0
        self._start_machine_s = 0.0

    @classmethod
    def this_process(cls, engine_pids: Iterable[int]) -> CpuMeter:
        return cls([os.getpid()], engine_pids)

    def _read(self) -> None:
        for pid in (*self._replica, *self._engine):
            if (cpu := _process_cpu_s(pid)) is not None:
                self._last[pid] = cpu
                self._first.setdefault(pid, cpu)

    def start(self) -> None:
        self._first.clear()
        self._read()
        self._start_wall_s = time.perf_counter()
        self._start_machine_s = _machine_busy_s()

    def stop(self) -> CpuUse:
        self._read()

        def used(pids: list[int]) -> float:
            return sum(self._last[p] - self._first[p] for p in pids if p in self._first)

        return CpuUse(time.perf_counter() - self._start_wall_s, used(self._replica),
                      used(self._engine), _machine_busy_s() - self._start_machine_s,
                      psutil.cpu_count() or 1)
