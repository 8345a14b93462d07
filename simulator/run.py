"""``augserve simulate run`` and ``simulate compare``: the same inputs and outputs as
``bench run`` / ``bench compare`` (workload flags, a config's ``bench`` block for what the
command line leaves unsaid — except the time scale, which applies only when given —,
``results.json``, ``requests.csv``, ``replicas.json``, ``queue.json``, plots,
``compare.json``), computed in simulated time.

Rates are requests per simulated second.  With ``--duration-s`` the run is the papers'
window: a pool of ``4 × rate × window`` requests drawn with replacement, Poisson (or the
chosen) arrivals over the pool, the run cut at the window; requests not finished by then
are counted (status 0, "unfinished"), never dropped.  Without it, every request of the
workload (``--limit`` of them) arrives and the run ends when the last one has.

Nothing written depends on the wall clock: two runs of the same command write the same
bytes.  Wall time and events per second go to standard error."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.metrics import summarize
from benchmarks.report import results_object, summary_table, write_run
from benchmarks.runner import REPLICA_COUNTERS, ReplaySettings, prepare
from benchmarks.workload import Workload
from simulator.events import EventLoop
from simulator.fleet import START_S, SimFleet
from simulator.predictions import CorePredictions, OraclePredictions, Predictions
from simulator.setup import SimFleetConfig, describe_setups, replica_setups
from simulator.shared_cpu import SharedCpu

#: The papers' pool: 4 × rate × window requests drawn with replacement.
POOL_FACTOR = 4


@dataclass(frozen=True)
class SimOptions:
    profile: str
    seed: int
    oracle: bool = False
    noise: float = 0.0
    duration_s: float | None = None
    #: Step every request one by one (no decode runs): the same outputs, slower.
    micro_steps: bool = False
    #: Every arrival goes straight to the first replica, with no queue manager (the real
    #: side of a replica-policy fidelity point does the same).
    direct: bool = False
    #: The engines share one machine's cores (fleet fidelity points on this CPU machine).
    shared_cpu: SharedCpu | None = None


def slo_targets(cfg: SimFleetConfig) -> dict[str, dict[str, float | None]]:
    return {name: {"ttft_s": c.ttft_ms / 1000 if c.ttft_ms else None,
                   "e2e_s": c.e2e_ms / 1000 if c.e2e_ms else None}
            for name, c in cfg.app.slo_classes.items()}


def prepare_workload(workload: Workload, cfg: SimFleetConfig, rate: float,
                     settings: ReplaySettings, opts: SimOptions) -> Workload:
    max_context = min(r.engine.max_model_len or 1 << 30 for r in cfg.app.replicas)
    if opts.duration_s is not None:
        pool = max(1, int(POOL_FACTOR * rate * opts.duration_s / settings.time_scale))
        workload = workload.sampled(pool, settings.seed)
    w = prepare(workload, max_context=max_context, limit=None if opts.duration_s else settings.limit,
                seed=settings.seed, time_scale=settings.time_scale, rate_rps=rate,
                arrival=settings.arrival, slo_shares=settings.slo_shares)
    if opts.duration_s is not None:
        w = Workload(w.name, [r for r in w.requests if (r.arrival_s or 0.0) < opts.duration_s],
                     {**w.meta, "window_s": opts.duration_s})
    return w


def _predictions(cfg: SimFleetConfig, opts: SimOptions,
                 clock: Callable[[], float]) -> Predictions:
    if opts.oracle or opts.noise > 0:
        return OraclePredictions(random.Random(opts.seed + 1), opts.noise)
    return CorePredictions(cfg.app.predictor.server, clock)


def run_once(cfg: SimFleetConfig, workload: Workload, rate: float, settings: ReplaySettings,
             opts: SimOptions, out_dir: Path, label: str) -> dict[str, Any]:
    w = prepare_workload(workload, cfg, rate, settings, opts)
    longest = max((len(r.prompt_token_ids or ()) + sum(t.generate_tokens + t.api_tokens
                                                         for t in r.turns)
                   for r in w.requests), default=0)
    setups = replica_setups(cfg, opts.profile, longest)
    if opts.micro_steps:
        setups = [dataclasses.replace(s, fast_decode=False) for s in setups]
    model = cfg.app.replicas[0].model_name
    loop = EventLoop()
    fleet = SimFleet(cfg.app, setups, _predictions(cfg, opts, loop.clock), loop,
                     direct=opts.direct, shared_cpu=opts.shared_cpu)
    from tqdm import tqdm
    bar = tqdm(total=len(w.requests), unit="req", disable=not settings.progress, file=sys.stderr,
               desc=f"{Path(label).stem} @ {rate:g}/s")
    fleet.on_request_end = lambda: bar.update(1)
    started = time.perf_counter()
    try:
        records = fleet.run(w, model, opts.duration_s)
    finally:
        bar.close()
    wall_s = time.perf_counter() - started
    end_s = opts.duration_s if opts.duration_s is not None else (fleet.end_s or START_S) - START_S
    targets = slo_targets(cfg)
    summary = summarize(records, targets, end_s)
    meta = {**w.describe(), "simulated": True, "profile": opts.profile, "oracle": opts.oracle,
            "noise": opts.noise, "replicas": describe_setups(setups),
            "unfinished": sum(1 for r in records if r.error == "unfinished at the end of the window")}
    result = results_object(meta, label, rate, summary, targets, "server")
    write_run(out_dir, result, records)
    _write_replicas(out_dir, fleet)
    print(summary_table(result))
    for row in json.loads((out_dir / "replicas.json").read_text()):
        print("replica " + ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                                     for k, v in row.items()))
    n = fleet.loop.num_events
    print(f"simulated {end_s:.0f} s, {len(records)} requests, {n} events in {wall_s:.1f} s wall "
          f"({n / max(wall_s, 1e-9):,.0f} events/s)", file=sys.stderr)
    return result


def _write_replicas(out_dir: Path, fleet: SimFleet) -> None:
    snap = fleet.dispatcher.snapshot()
    plan = snap.get("plan")
    if isinstance(plan, dict):
        plan.pop("solve_ms", None)  # wall time: kept out of the files
    (out_dir / "queue.json").write_text(json.dumps(snap, indent=2, sort_keys=True))
    rows = []
    for r in fleet.replicas.values():
        extra = r.stats().extra
        rows.append({"replica_id": r.replica_id, "deployment": r.setup.deployment,
                     **{k: extra.get(k) for k in REPLICA_COUNTERS},
                     "num_preempted_total": extra["num_preempted_total"],
                     "swapped_tokens": extra["swapped_tokens"], "busy_s": round(r.busy_s, 6)})
    (out_dir / "replicas.json").write_text(json.dumps(rows, indent=2))
