"""``augserve simulate fidelity``: the simulator against the real engine, point by point.

A point is one replica config at one rate.  Its real side replays the workload on one
replica's ``ReplicaCore`` over the real vLLM engine in this process
(:mod:`benchmarks.direct_replay`: no Serve, less noise), ``--reps`` times on the same
arrivals; its simulated side is one ``simulate run`` of the same config, workload, seed
and time scale with the CPU profile.  Both sides get the true lengths as predictions.
Each figure is judged by :mod:`simulator.fidelity_targets`; where the real CIs separate
two configs at a rate, the simulator must order them the same way.

Only replica policies are covered so far (the queue-policy points, which need the Serve
app, are not built).  ``--quick``: fcfs and lamps at one rate, one repetition — every
verdict is then "inconclusive" (one sample has no CI): a smoke run of the whole path."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.metrics import summarize
from benchmarks.report import results_object, write_run
from benchmarks.runner import ReplaySettings
from benchmarks.workload import Workload
from replicas.policy.profile import StepRecord
from simulator.fidelity_targets import (
    Estimate,
    Judgement,
    Kind,
    OrderCheck,
    check_order,
    estimate,
    format_judgements,
    judge,
)
from simulator.fit import FitScore, host_gaps_ms, read_steps, score, write_steps
from simulator.profiles import load_profile
from simulator.run import SimOptions, prepare_workload, run_once, slo_targets
from simulator.setup import SimFleetConfig

QUICK_CONFIGS = ("deploy/serve/bench-fcfs.yaml", "deploy/serve/bench-lamps.yaml")
FULL_CONFIGS = ("deploy/serve/bench-fcfs.yaml", "deploy/serve/bench-infercept.yaml",
                "deploy/serve/bench-lamps.yaml")
CPU_PROFILE = "cpu-tiny-llama"

#: (figure, rule).  Central figures become tails at a saturated point; each SLO class
#: of the runs adds ``slo % CLASS`` (its attainment, judged in points).
FIGURES: tuple[tuple[str, Kind], ...] = (
    ("e2e mean s", Kind.CENTRAL), ("e2e p50 s", Kind.CENTRAL), ("ttft mean s", Kind.CENTRAL),
    ("ttft p50 s", Kind.CENTRAL), ("e2e p99 s", Kind.TAIL), ("preserve %", Kind.POINTS),
    ("recomputed tokens", Kind.COUNT), ("preemptions", Kind.COUNT))


def figures(summary: dict[str, Any], ttfts_s: Sequence[float],
            counters: dict[str, float]) -> dict[str, float]:
    """The judged figures of one run: its summary, its completed requests' TTFTs and its
    replica's counters."""
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


SLO_PREFIX = "slo % "
#: A point whose real engine was busy this share of its runs' time (their steps' summed
#: times over the run) is saturated: its central figures are judged as tails.
SATURATED_UTILIZATION = 0.90


def utilization(steps: Sequence[StepRecord], duration_s: float) -> float:
    """The share of ``duration_s`` the engine spent in its steps."""
    return sum(r.step_ms for r in steps) / 1000.0 / duration_s if duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PointResult:
    config: str
    rate: float
    real: dict[str, Estimate | None]
    simulated: dict[str, float]
    judgements: list[Judgement]
    #: The CPU profile's step-cost model on every real step of the point's repetitions.
    step_cost: FitScore | None = None
    #: The real engine's mean utilization over the repetitions (:func:`utilization`).
    utilization: float | None = None
    #: The median host time between two real steps, ms (:func:`simulator.fit.host_gaps_ms`;
    #: None when the steps carry no start times).
    host_gap_ms: float | None = None

    @property
    def saturated(self) -> bool:
        return self.utilization is not None and self.utilization >= SATURATED_UTILIZATION


@dataclass(frozen=True, slots=True)
class RealRep:
    """One real repetition: its judged figures, its engine's steps, its duration."""

    figures: dict[str, float]
    steps: list[StepRecord]
    duration_s: float


#: Files a real repetition leaves in ``real-K/`` besides the bench run's.
REPLICA_FILE, STEPS_FILE = "replica.json", "steps.csv"


def _reused(out_dir: Path, k: int) -> RealRep | None:
    """A repetition an earlier command left in ``real-K/`` (``--reuse-real``), if whole."""
    d = out_dir / f"real-{k}"
    if not all((d / n).is_file() for n in ("results.json", "requests.csv", REPLICA_FILE,
                                             STEPS_FILE)):
        return None
    summary = json.loads((d / "results.json").read_text())["summary"]
    counters = json.loads((d / REPLICA_FILE).read_text())
    return RealRep(figures(summary, _ttfts(d / "requests.csv"), counters),
                   read_steps(d / STEPS_FILE), float(summary["duration_s"]))


def _ttfts(path: Path) -> list[float]:
    with path.open() as f:
        return [float(row["ttft_s"]) for row in csv.DictReader(f)
                if row["ok"] == "True" and row["ttft_s"] not in ("", "None")]


def _real_runs(path: str, cfg: SimFleetConfig, workload: Workload, rate: float, reps: int,
               out_dir: Path, reuse: bool = False) -> list[RealRep]:
    """The real repetitions; each one's records
    written as a bench run (``real-K/``: results.json, requests.csv, plots) beside the
    simulated run's, with the replica's counters and its engine's steps.  ``reuse``: a
    repetition already in ``real-K/`` is read, not run again."""
    out: list[RealRep] = []
    for k in range(1, reps + 1):
        if reuse and (got := _reused(out_dir, k)) is not None:
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
        (d / REPLICA_FILE).write_text(json.dumps(counters, indent=2, sort_keys=True))
        write_steps(d / STEPS_FILE, run.steps)
        ttfts = [t for r in run.records if r.ok and (t := r.ttft_s) is not None]
        out.append(RealRep(figures(summary, ttfts, counters), run.steps, run.duration_s))
    return out


def _simulated(path: str, cfg: SimFleetConfig, workload: Workload, rate: float,
               settings: ReplaySettings, opts: SimOptions, out_dir: Path) -> dict[str, float]:
    result = run_once(cfg, workload, rate, settings, opts, out_dir, path)
    rows = json.loads((out_dir / "replicas.json").read_text())
    counters: dict[str, float] = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, (int, float)):
                counters[k] = counters.get(k, 0.0) + float(v)
    return figures(result["summary"], _ttfts(out_dir / "requests.csv"), counters)


def run_point(path: str, cfg: SimFleetConfig, workload: Workload, rate: float,
              settings: ReplaySettings, reps: int, out_dir: Path,
              reuse: bool = False) -> PointResult:
    """Run (or, with ``reuse``, read) the real repetitions, run the simulated side, judge.
    A point is saturated when its real engine was busy at least
    :data:`SATURATED_UTILIZATION` of the time."""
    opts = SimOptions(CPU_PROFILE, settings.seed, oracle=True, direct=True)
    w = prepare_workload(workload, cfg, rate, settings, opts)
    reps_run = _real_runs(path, cfg, w, rate, reps, out_dir, reuse)
    sim = _simulated(path, cfg, workload, rate, settings, opts, out_dir)
    steps = [s for r in reps_run for s in r.steps]
    busy = statistics.fmean(utilization(r.steps, r.duration_s) for r in reps_run)
    saturated = busy >= SATURATED_UTILIZATION
    slo = sorted(set.intersection(*(set(r.figures) for r in reps_run)) - {n for n, _ in FIGURES})
    real: dict[str, Estimate | None] = {}
    judgements = []
    for name, kind in (*FIGURES, *((n, Kind.POINTS) for n in slo)):
        values = [r.figures[name] for r in reps_run]
        est = estimate(values) if len(values) >= 2 else Estimate(values[0], float("inf"), 1)
        real[name] = est
        rule = Kind.TAIL if saturated and kind is Kind.CENTRAL else kind
        judgements.append(judge(name, rule, est, sim.get(name, math.nan)))
    step_cost = score(load_profile(CPU_PROFILE).cost(), steps) if steps else None
    gaps = [g for r in reps_run for g in host_gaps_ms(r.steps)]
    return PointResult(path, rate, real, sim, judgements, step_cost, busy if steps else None,
                       statistics.median(gaps) if gaps else None)


def order_checks(points: Sequence[PointResult]) -> list[OrderCheck]:
    """Every pair of configs at the same rate, on mean e2e and mean TTFT."""
    checks = []
    for i, a in enumerate(points):
        for b in points[i + 1:]:
            if a.rate != b.rate:
                continue
            for fig in ("e2e mean s", "ttft mean s"):
                ra, rb = a.real[fig], b.real[fig]
                if ra is None or rb is None:
                    continue
                checks.append(check_order(fig, Path(a.config).stem, ra, a.simulated[fig],
                                          Path(b.config).stem, rb, b.simulated[fig]))
    return checks


def report(points: Sequence[PointResult], checks: Sequence[OrderCheck]) -> str:
    parts = []
    for p in points:
        parts.append(f"\n### {Path(p.config).stem} at {p.rate:g} req/s\n")
        if p.utilization is not None:
            parts.append(f"real engine busy {100 * p.utilization:.0f} % of the time: "
                         + ("saturated (central figures judged as tails)\n" if p.saturated
                            else "below saturation\n"))
        parts.append(format_judgements(p.judgements))
        if p.step_cost is not None:
            sc = p.step_cost
            parts.append(f"\n{CPU_PROFILE}'s step cost on the real runs' {sc.num_steps} steps: "
                         f"mean absolute error {100 * sc.mean_abs_error:.1f} %, total time "
                         f"{100 * sc.total_bias:+.1f} %")
        if p.host_gap_ms is not None:
            parts.append(f"host time between real steps (median, engine busy): "
                         f"{p.host_gap_ms:.2f} ms")
    if checks:
        parts.append("\n### Order where the real CIs separate\n")
        parts.append("| figure | first | second | real CIs separate | verdict |")
        parts.append("|---|---|---|---|---|")
        for c in checks:
            parts.append(f"| {c.figure} | {c.first} | {c.second} | {c.separated} | "
                         f"{c.verdict.value} |")
    return "\n".join(parts)


def write(out: Path, points: Sequence[PointResult], checks: Sequence[OrderCheck]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    obj = {"points": [{"config": p.config, "rate": p.rate, "simulated": p.simulated,
                       "utilization": p.utilization, "saturated": p.saturated,
                       "host_gap_ms": p.host_gap_ms,
                       "real": {k: None if v is None else {"mean": v.mean,
                                                           "half_width": v.half_width,
                                                           "n": v.n}
                                for k, v in p.real.items()},
                       "judgements": [{"figure": j.figure, "kind": j.kind.value,
                                       "error": j.error, "tolerance": j.tolerance,
                                       "verdict": j.verdict.value} for j in p.judgements],
                       "step_cost": None if p.step_cost is None else {
                           "num_steps": p.step_cost.num_steps,
                           "mean_abs_error": p.step_cost.mean_abs_error,
                           "total_bias": p.step_cost.total_bias}}
                      for p in points],
           "order": [{"figure": c.figure, "first": c.first, "second": c.second,
                      "separated": c.separated, "verdict": c.verdict.value} for c in checks]}
    (out / "fidelity.json").write_text(json.dumps(obj, indent=2, default=str))
    print(f"wrote {out}/fidelity.json", file=sys.stderr)
