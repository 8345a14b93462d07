"""``augserve simulate fidelity``: the simulator against the real engine, point by point.

A point is one config at one rate.  Its real side (:mod:`simulator.fidelity_runs`) runs
``--reps`` times on the same arrivals:

- a **one-replica** config (a replica policy: fcfs, infercept, lamps) on that replica's
  ``ReplicaCore`` over the real vLLM engine in this process (no Serve, less noise), with
  the true lengths as predictions on both sides; every engine step recorded;
- a **fleet** config (a queue policy: fifo, qlm on ``hetero-*.yaml``) as the Serve app,
  deployed afresh for each repetition, with the app's own predictor on both sides.

Its simulated side is one ``simulate run`` of the same config, workload, seed and time
scale with the CPU profile (a one-replica config fed directly, as its real side; a fleet
through the queue manager).  Each figure is judged by :mod:`simulator.fidelity_targets`;
where the real CIs separate two configs at a rate, the simulator must order them the
same way.  ``--quick``: fcfs and lamps at one rate, one repetition — every verdict is then
"inconclusive" (one sample has no CI): a smoke run of the whole path."""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.runner import ReplaySettings
from benchmarks.workload import Workload
from replicas.policy.profile import StepRecord
from simulator.fidelity_runs import (
    SLO_PREFIX,
    RealRep,
    direct_reps,
    figures,
    serve_reps,
    summed_counters,
    ttfts,
)
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
from simulator.fit import FitScore, host_gaps_ms, score
from simulator.profiles import Profile, load_profile
from simulator.run import SimOptions, prepare_workload, run_once
from simulator.setup import SimFleetConfig
from simulator.shared_cpu import SharedCpu

#: The queue-policy points: fifo vs qlm on the heterogeneous fleet, at its overload rate.
QUEUE_CONFIGS = ("deploy/serve/hetero-fifo.yaml", "deploy/serve/hetero-qlm.yaml")
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

#: A point whose real engine was busy this share of its runs' time (their steps' summed
#: times over the run; for a fleet, whose steps are not recorded, the machine's cores'
#: busy share) is saturated: its central figures are judged as tails.
SATURATED_UTILIZATION = 0.90


def utilization(steps: Sequence[StepRecord], duration_s: float) -> float:
    """The share of ``duration_s`` the engine spent in its steps."""
    return sum(r.step_ms for r in steps) / 1000.0 / duration_s if duration_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class CpuShares:
    """Cores used on average over a run (CPU seconds per wall second) by the replicas'
    own processes, by the engines (core and workers) and by everything else, and the
    machine's busy share (0–1)."""

    replica_cores: float
    engine_cores: float
    other_cores: float
    machine_busy: float

    @classmethod
    def of(cls, reps: Sequence[RealRep]) -> CpuShares | None:
        uses = [r.cpu for r in reps if r.cpu is not None and r.cpu.wall_s > 0]
        if not uses:
            return None
        return cls(statistics.fmean(u.replica_cpu_s / u.wall_s for u in uses),
                   statistics.fmean(u.engine_cpu_s / u.wall_s for u in uses),
                   statistics.fmean(u.other_cpu_s / u.wall_s for u in uses),
                   statistics.fmean(u.machine_busy_share for u in uses))


@dataclass(frozen=True, slots=True)
class PointResult:
    config: str
    rate: float
    real: dict[str, Estimate | None]
    simulated: dict[str, float]
    judgements: list[Judgement]
    #: The CPU profile's step-cost model on every real step of the point's repetitions.
    step_cost: FitScore | None = None
    #: The real engine's mean utilization over the repetitions (:func:`utilization`; for a
    #: fleet, the machine's cores' busy share).
    utilization: float | None = None
    #: The median host time between two real steps, ms (:func:`simulator.fit.host_gaps_ms`;
    #: None when the steps carry no start times).
    host_gap_ms: float | None = None
    #: Where the real side's CPU went, as the mean over its repetitions of each share.
    cpu: CpuShares | None = None
    #: A fleet point: the shared cores its simulated side modelled (None: not modelled),
    #: and the figures simulated with each engine on its own accelerator instead.
    shared_cpu: SharedCpu | None = None
    simulated_own: dict[str, float] | None = None

    @property
    def saturated(self) -> bool:
        return self.utilization is not None and self.utilization >= SATURATED_UTILIZATION


def _simulated(path: str, cfg: SimFleetConfig, workload: Workload, rate: float,
               settings: ReplaySettings, opts: SimOptions, out_dir: Path) -> dict[str, float]:
    result = run_once(cfg, workload, rate, settings, opts, out_dir, path)
    counters = summed_counters(json.loads((out_dir / "replicas.json").read_text()))
    return figures(result["summary"], ttfts(out_dir / "requests.csv"), counters)


def shared_cpu(profile: Profile, reps: Sequence[RealRep]) -> SharedCpu | None:
    """The cores a fleet's engines shared in its real repetitions: the machine's cores and
    the rest of the app's use measured there (``cpu.json``), an engine's own demand and
    its profile runs' rest from the profile; None when either is missing."""
    uses = [r.cpu for r in reps if r.cpu is not None and r.cpu.wall_s > 0]
    if not uses or profile.engine_cores is None or profile.profiled_background_cores is None:
        return None
    return SharedCpu(float(uses[0].num_cpus), profile.engine_cores.value,
                     statistics.fmean((u.replica_cpu_s + u.other_cpu_s) / u.wall_s
                                      for u in uses),
                     profile.profiled_background_cores.value)


def is_fleet(cfg: SimFleetConfig) -> bool:
    """A config of more than one replica: its real side needs the Serve app."""
    return sum(cfg.num_replicas.values()) > 1


def run_point(path: str, cfg: SimFleetConfig, workload: Workload, rate: float,
              settings: ReplaySettings, reps: int, out_dir: Path,
              reuse: bool = False) -> PointResult:
    """Run (or, with ``reuse``, read) the real repetitions, run the simulated side, judge.
    A point is saturated when its real engine (a fleet: the machine) was busy at least
    :data:`SATURATED_UTILIZATION` of the time."""
    fleet = is_fleet(cfg)
    opts = SimOptions(CPU_PROFILE, settings.seed, oracle=not fleet, direct=not fleet)
    if fleet:
        reps_run = serve_reps(path, cfg, workload, rate, settings, reps, out_dir, reuse)
    else:
        w = prepare_workload(workload, cfg, rate, settings, opts)
        reps_run = direct_reps(path, cfg, w, rate, reps, out_dir, reuse)
    shared = shared_cpu(load_profile(CPU_PROFILE), reps_run) if fleet else None
    own: dict[str, float] | None = None
    if shared is not None:
        own = _simulated(path, cfg, workload, rate, settings, opts, out_dir / "own-accelerators")
        opts = replace(opts, shared_cpu=shared)
    sim = _simulated(path, cfg, workload, rate, settings, opts, out_dir)
    steps = [s for r in reps_run for s in r.steps]
    cpu = CpuShares.of(reps_run)
    busy: float | None = None
    if steps:
        busy = statistics.fmean(utilization(r.steps, r.duration_s) for r in reps_run)
    elif fleet and cpu is not None:
        busy = cpu.machine_busy
    saturated = busy is not None and busy >= SATURATED_UTILIZATION
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
    return PointResult(path, rate, real, sim, judgements, step_cost, busy,
                       statistics.median(gaps) if gaps else None, cpu, shared, own)


def order_checks(points: Sequence[PointResult]) -> list[OrderCheck]:
    """Every pair of configs at the same rate, on mean e2e, mean TTFT and each SLO class's
    attainment they share."""
    checks = []
    for i, a in enumerate(points):
        for b in points[i + 1:]:
            if a.rate != b.rate:
                continue
            slo = sorted(n for n in a.real.keys() & b.real.keys() if n.startswith(SLO_PREFIX))
            for fig in ("e2e mean s", "ttft mean s", *slo):
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
            what = "real engine" if p.step_cost is not None else "machine (every core)"
            parts.append(f"{what} busy {100 * p.utilization:.0f} % of the time: "
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
        if p.cpu is not None:
            parts.append(f"real CPU, cores used on average: replicas' own processes "
                         f"{p.cpu.replica_cores:.2f}, engines {p.cpu.engine_cores:.2f}, "
                         f"everything else {p.cpu.other_cores:.2f}; machine busy "
                         f"{100 * p.cpu.machine_busy:.0f} %")
        if p.shared_cpu is not None:
            sc_ = p.shared_cpu
            parts.append(f"simulated with the engines sharing {sc_.num_cores:g} cores (an engine"
                         f" stepping wants {sc_.engine_cores:.2f}, the rest takes "
                         f"{sc_.background_cores:.2f} first; {sc_.profiled_background_cores:.2f}"
                         f" in the profile's runs): steps stretch "
                         + ", ".join(f"×{sc_.stretch(k):.2f} with {k} stepping"
                                     for k in (1, 2, 3)))
        if p.simulated_own is not None:
            parts.append("simulated with each engine on its own accelerator instead: "
                         + ", ".join(f"{k} {p.simulated_own[k]:.4g}" for k in
                                     ("e2e mean s", "e2e p50 s", "ttft mean s", "ttft p50 s")))
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
                       "cpu": None if p.cpu is None else {
                           "replica_cores": p.cpu.replica_cores,
                           "engine_cores": p.cpu.engine_cores,
                           "other_cores": p.cpu.other_cores,
                           "machine_busy": p.cpu.machine_busy},
                       "shared_cpu": None if p.shared_cpu is None else {
                           "num_cores": p.shared_cpu.num_cores,
                           "engine_cores": p.shared_cpu.engine_cores,
                           "background_cores": p.shared_cpu.background_cores,
                           "profiled_background_cores":
                               p.shared_cpu.profiled_background_cores},
                       "simulated_own_accelerators": p.simulated_own,
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
