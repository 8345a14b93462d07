"""Engines sharing one machine's cores (simulator.shared_cpu): the stretch of a step, and a
simulated fleet whose replicas slow each other down only when the cores are shared."""

from __future__ import annotations

import random

import pytest

from benchmarks.workload import Turn, Workload, WorkloadRequest
from simulator.events import EventLoop
from simulator.fleet import SimFleet
from simulator.predictions import OraclePredictions
from simulator.setup import load_config, replica_setups
from simulator.shared_cpu import MIN_ENGINE_SHARE_CORES, CpuPool, SharedCpu

CONFIG = "deploy/serve/hetero-fifo.yaml"  # three replicas


def test_the_rest_takes_its_cores_first_and_the_engines_share_what_is_left() -> None:
    cpu = SharedCpu(num_cores=2, engine_cores=1.0, background_cores=1.0,
                    profiled_background_cores=0.5)
    assert cpu.stretch(1) == 1.0  # one engine wants 1 core, 1 is left
    assert cpu.stretch(2) == pytest.approx(2.0)  # two want 2, 1 is left
    assert cpu.stretch(3) == pytest.approx(3.0)
    # a profile measured on a crowded machine already holds that crowding
    crowded = SharedCpu(2, 1.0, 1.0, profiled_background_cores=1.5)  # 0.5 left then
    assert crowded.stretch(2) == pytest.approx(1.0)
    assert crowded.stretch(1) == pytest.approx(0.5)
    # a rest that wants every core still leaves the engines a sliver, never nothing
    starved = SharedCpu(2, 1.0, 2.5, 0.0)
    assert starved.stretch(1) == pytest.approx(1.0 / MIN_ENGINE_SHARE_CORES)
    with pytest.raises(ValueError, match="num_cores must be > 0"):
        SharedCpu(0, 1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="background_cores must be >= 0"):
        SharedCpu(2, 1.0, -0.5, 1.0)


def test_the_pool_counts_the_engines_that_step_now() -> None:
    pool = CpuPool(SharedCpu(2, 1.0, 0.0, 1.0))
    assert pool.begin_step() == 1.0 and pool.begin_step() == 1.0
    assert pool.begin_step() == pytest.approx(1.5) and pool.num_stepping == 3
    for _ in range(3):
        pool.end_step()
    with pytest.raises(RuntimeError, match="never began"):
        pool.end_step()


def _run(shared: SharedCpu | None, n: int = 12,
         prompt_growth: int = 1) -> tuple[list[float], float, SimFleet]:
    cfg = load_config(CONFIG)
    loop = EventLoop()
    fleet = SimFleet(cfg.app, replica_setups(cfg, "cpu-tiny-llama"),
                     OraclePredictions(random.Random(0), 0.0), loop, shared_cpu=shared)
    requests = [WorkloadRequest(f"r{i}", tuple(range(1, 60 + prompt_growth * i)), None,
                                (Turn(40, "search", 0.2, 8), Turn(20)), slo="batch",
                                arrival_s=0.05 * i) for i in range(n)]
    records = fleet.run(Workload("w", requests, {}), cfg.app.replicas[0].model_name, None)
    assert len(records) == n and all(r.status == 200 for r in records)
    busy = sum(r.busy_s for r in fleet.replicas.values())
    return [r.end_s - r.send_s for r in records], busy, fleet


def test_shared_cores_slow_a_fleet_only_when_its_engines_crowd_them() -> None:
    own, own_busy, _ = _run(None)
    roomy, roomy_busy, _ = _run(SharedCpu(16, 1.0, 0.0, 1.0))  # never crowded
    assert roomy == own and roomy_busy == own_busy
    crowded, crowded_busy, fleet = _run(SharedCpu(2, 1.5, 0.7, 0.14))
    assert crowded_busy > 1.2 * own_busy
    assert sum(crowded) > sum(own)
    assert all(r.cpu is not None and r.cpu.num_stepping == 0 for r in fleet.replicas.values())
    again, again_busy, _ = _run(SharedCpu(2, 1.5, 0.7, 0.14))  # deterministic
    assert again == crowded and again_busy == crowded_busy


def test_a_replica_decides_its_turns_with_its_live_fit_of_its_own_steps() -> None:
    # the real replica refreshes its profile from its engine's measured steps
    # (scheduling.live_profile) and decides preserve / discard with it; so does the
    # simulated one: stretched steps show in the profile it reports
    _, _, own = _run(None)
    _, _, crowded = _run(SharedCpu(2, 1.5, 0.7, 0.14), n=60, prompt_growth=23)
    profiled_c_ms = next(iter(own.replicas.values())).setup.profile.c_ms
    live = [r.stats().extra for r in crowded.replicas.values()
            if r.engine.ranker.fit.current().source == "live"]
    assert live, "no replica stepped enough for a live fit"
    assert all(e["profile_c_ms"] > 1.5 * profiled_c_ms for e in live)
    assert all(r.profile.source == "live" for r in crowded.replicas.values()
               if r.engine.ranker.fit.current().source == "live")
