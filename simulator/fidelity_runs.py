"""The real side of a fidelity point: its repetitions, run or read back.

- A **one-replica** config (a replica policy) runs on that replica's ``ReplicaCore`` over
  the real vLLM engine in this process (:mod:`benchmarks.direct_replay`: no Serve, no
  queue manager, less noise), with the true lengths as predictions; every engine step is
  recorded.
- A **fleet** config (several replicas: a queue policy) runs as the Serve app ``augserve
  serve`` would start, deployed afresh for every repetition (no state carried from one to
  the next) and replayed by ``bench run``'s own client over HTTP, with the app's own
  predictor.  Its engines' steps are not recorded (they live in the replicas' processes).

Each repetition is written as a bench run (``real-K/``: results.json, requests.csv, plots)
with the replicas' counters (``replica.json``, summed over the fleet), the steps
(``steps.csv``, empty for a fleet) and where the CPU went (``cpu.json``:
:class:`benchmarks.cpu_use.CpuUse`)."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.cpu_use import CpuMeter, CpuUse
from benchmarks.metrics import summarize
from benchmarks.report import results_object, write_run
from benchmarks.runner import ReplaySettings
from benchmarks.workload import Workload
from replicas.policy.profile import StepRecord
from simulator.fit import read_steps, write_steps
from simulator.run import slo_targets
from simulator.setup import SimFleetConfig

SLO_PREFIX = "slo % "
#: Files a real repetition leaves in ``real-K/`` besides the bench run's.
REPLICA_FILE, STEPS_FILE, CPU_FILE = "replica.json", "steps.csv", "cpu.json"
#: The longest wait, after the app reports RUNNING, for every replica to report healthy
#: with its engine's pid.
FLEET_READY_TIMEOUT_S = 300.0


def figures(summary: dict[str, Any], ttfts_s: Sequence[float],
            counters: dict[str, float]) -> dict[str, float]:
    """The judged figures of one run: its summary, its completed requests' TTFTs and its
    replicas' counters (summed over the fleet)."""
    calls = sum(counters.get(k, 0.0) for k in ("calls_preserve", "calls_discard", "calls_swap"))
    return {"e2e mean s": summary["mean_e2e_s"], "e2e p50 s": summary["p50_e2e_s"],
            "ttft mean s": summary["mean_ttft_s"],
            "ttft p50 s": statistics.median(ttfts_s) if ttfts_s else math.nan,
            "e2e p99 s": summary["p99_e2e_s"],
            "preserve %": 100.0 * counters.get("calls_preserve", 0.0) / calls if calls else 0.0,
            "recomputed tokens": counters.get("recomputed_tokens", 0.0),
            "preemptions": counters.get("num_preempted_total", 0.0),
            **{f"{SLO_PREFIX}{cls}": 100.0 * v for cls, v
               in sorted(summary.get("slo_attainment_per_class", {}).items())}}


@dataclass(frozen=True, slots=True)
class RealRep:
    """One real repetition: its judged figures, its engine's steps (none for a fleet),
    its duration, where its CPU went (None in files written before it was measured)."""

    figures: dict[str, float]
    steps: list[StepRecord]
    duration_s: float
    cpu: CpuUse | None = None


def ttfts(path: Path) -> list[float]:
    """The TTFTs of a requests.csv's completed requests."""
    with path.open() as f:
        return [float(row["ttft_s"]) for row in csv.DictReader(f)
                if row["ok"] == "True" and row["ttft_s"] not in ("", "None")]


def reused(out_dir: Path, k: int) -> RealRep | None:
    """A repetition an earlier command left in ``real-K/`` (``--reuse-real``), if whole."""
    d = out_dir / f"real-{k}"
    if not all((d / n).is_file() for n in ("results.json", "requests.csv", REPLICA_FILE,
                                             STEPS_FILE)):
        return None
    summary = json.loads((d / "results.json").read_text())["summary"]
    counters = json.loads((d / REPLICA_FILE).read_text())
    cpu = CpuUse.read(d / CPU_FILE) if (d / CPU_FILE).is_file() else None
    return RealRep(figures(summary, ttfts(d / "requests.csv"), counters),
                   read_steps(d / STEPS_FILE), float(summary["duration_s"]), cpu)


def _save(d: Path, counters: dict[str, float], steps: Sequence[StepRecord], cpu: CpuUse) -> None:
    (d / REPLICA_FILE).write_text(json.dumps(counters, indent=2, sort_keys=True))
    write_steps(d / STEPS_FILE, steps)
    cpu.write(d / CPU_FILE)


def direct_reps(path: str, cfg: SimFleetConfig, workload: Workload, rate: float, reps: int,
                out_dir: Path, reuse: bool = False) -> list[RealRep]:
    """A one-replica config's repetitions on the real engine in this process;
    ``workload`` is already prepared (arrival times, SLO classes).  ``reuse``: a
    repetition already in ``real-K/`` is read, not run again."""
    out: list[RealRep] = []
    for k in range(1, reps + 1):
        if reuse and (got := reused(out_dir, k)) is not None:
            out.append(got)
            continue
        from benchmarks.direct_replay import replay  # starts the real engine
        run = asyncio.run(replay(cfg.app, workload))
        failed = [r.error for r in run.records if not r.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} real requests failed, e.g. {failed[0]}")
        targets = slo_targets(cfg)
        summary = summarize(run.records, targets, run.duration_s)
        meta = {**workload.describe(), "simulated": False, "direct_replica": True,
                "repetition": k}
        d = out_dir / f"real-{k}"
        write_run(d, results_object(meta, path, rate, summary, targets, "server"), run.records)
        counters = {k: float(v) for k, v in run.stats.extra.items()
                    if isinstance(v, (int, float))}
        _save(d, counters, run.steps, run.cpu)
        got_ttfts = [t for r in run.records if r.ok and (t := r.ttft_s) is not None]
        out.append(RealRep(figures(summary, got_ttfts, counters), run.steps, run.duration_s,
                           run.cpu))
    return out


def _fleet_ready(url: str, num_replicas: int, timeout_s: float) -> tuple[list[int], list[int]]:
    """Wait until ``/health`` answers 200 and the queue manager lists ``num_replicas``
    healthy replicas with their engines' pids; returns (replica pids, engine pids)."""
    import httpx
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"{url}/health", timeout=10)
            snap = httpx.get(f"{url}/v1/admin/queue", timeout=10).json()
        except (httpx.HTTPError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            rows = [r for r in snap.get("replicas", []) if r.get("healthy")]
            extras = [r.get("extra") or {} for r in rows]
            if (health.status_code == 200 and len(rows) >= num_replicas
                    and all(e.get("engine_pid") for e in extras)):
                return ([int(e.get("pid", 0)) for e in extras],
                        [int(e["engine_pid"]) for e in extras])
            last = f"/health {health.status_code}, {len(rows)} of {num_replicas} replicas healthy"
        time.sleep(1.0)
    raise TimeoutError(f"the fleet was not ready after {timeout_s:.0f} s: {last}")


#: Numbers in a replica's report that are ids, not counters.
_NOT_COUNTERS = ("pid", "engine_pid")


def summed_counters(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Every numeric field of the replicas' rows, summed over the fleet (ids left out)."""
    out: dict[str, float] = {}
    for row in rows:
        for key, v in row.items():
            if isinstance(v, (int, float)) and key not in _NOT_COUNTERS:
                out[key] = out.get(key, 0.0) + float(v)
    return out


def _fleet_counters(queue_json: Path) -> dict[str, float]:
    """The replicas' counters in a bench run's queue.json, summed over the fleet."""
    if not queue_json.is_file():
        return {}
    return summed_counters(r.get("extra") or {}
                           for r in json.loads(queue_json.read_text()).get("replicas", []))


def serve_reps(path: str, cfg: SimFleetConfig, workload: Workload, rate: float,
               settings: ReplaySettings, reps: int, out_dir: Path,
               reuse: bool = False) -> list[RealRep]:
    """A fleet config's repetitions on the Serve app (deployed afresh for each), replayed
    by ``bench run``'s client; ``workload`` is the raw one (the replay prepares it with
    ``settings``, as ``bench run`` does)."""
    from benchmarks.client import probe
    from benchmarks.runner import run_once, server_slo
    from orchestrator import serving

    schema = serving.load_serve_config(path)
    http = schema.http_options
    url = f"http://{http.host}:{http.port}"
    num_replicas = sum(cfg.num_replicas.values())
    out: list[RealRep] = []
    for k in range(1, reps + 1):
        if reuse and (got := reused(out_dir, k)) is not None:
            out.append(got)
            continue
        d = out_dir / f"real-{k}"
        serving.start_ray()
        try:
            serving.deploy(schema)
            replica_pids, engine_pids = _fleet_ready(url, num_replicas, FLEET_READY_TIMEOUT_S)
            info = asyncio.run(probe(url))
            slo = server_slo(url, settings)
            meter = CpuMeter(replica_pids, engine_pids)
            meter.start()
            result = run_once(url, info, workload, rate, d, settings, slo, path)
            cpu = meter.stop()
        finally:
            serving.shutdown()
        counters = _fleet_counters(d / "queue.json")
        _save(d, counters, [], cpu)
        summary = result["summary"]
        out.append(RealRep(figures(summary, ttfts(d / "requests.csv"), counters), [],
                           float(summary["duration_s"]), cpu))
    return out
