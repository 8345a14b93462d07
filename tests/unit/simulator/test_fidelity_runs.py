"""The real side's files (simulator.fidelity_runs) and how a fleet point is told apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cpu_use import CpuUse
from simulator.fidelity import CpuShares, is_fleet
from simulator.fidelity_runs import (
    CPU_FILE,
    REPLICA_FILE,
    STEPS_FILE,
    RealRep,
    _fleet_counters,
    reused,
)
from simulator.setup import load_config


def test_a_config_of_several_replicas_is_a_fleet_point() -> None:
    assert is_fleet(load_config("deploy/serve/hetero-fifo.yaml"))
    assert is_fleet(load_config("deploy/serve/hetero-qlm.yaml"))
    assert not is_fleet(load_config("deploy/serve/bench-lamps.yaml"))


def test_fleet_counters_sum_every_replicas_counters_but_their_pids(tmp_path: Path) -> None:
    snap = {"replicas": [
        {"deployment": "a", "extra": {"calls_preserve": 2.0, "recomputed_tokens": 10,
                                      "pid": 11.0, "engine_pid": 12.0}},
        {"deployment": "b", "extra": {"calls_preserve": 1.0, "calls_discard": 4.0,
                                      "pid": 21.0, "engine_pid": 22.0, "note": "text"}},
        {"deployment": "c"}]}
    (tmp_path / "queue.json").write_text(json.dumps(snap))
    got = _fleet_counters(tmp_path / "queue.json")
    assert got == {"calls_preserve": 3.0, "recomputed_tokens": 10.0, "calls_discard": 4.0}
    assert _fleet_counters(tmp_path / "missing.json") == {}


def _write_rep(d: Path, cpu: CpuUse | None) -> None:
    d.mkdir(parents=True)
    summary = {"mean_e2e_s": 2.0, "p50_e2e_s": 1.0, "mean_ttft_s": 0.5, "p99_e2e_s": 4.0,
               "duration_s": 30.0, "slo_attainment_per_class": {"batch": 1.0}}
    (d / "results.json").write_text(json.dumps({"summary": summary}))
    (d / "requests.csv").write_text("id,ok,ttft_s\na,True,0.5\nb,False,\n")
    (d / REPLICA_FILE).write_text(json.dumps({"calls_preserve": 1.0, "calls_discard": 1.0}))
    (d / STEPS_FILE).write_text("num_tokens,num_seqs,num_prefill_tokens,context_tokens,step_ms\n")
    if cpu is not None:
        cpu.write(d / CPU_FILE)


def test_a_reused_repetition_reads_its_cpu_use_when_it_was_measured(tmp_path: Path) -> None:
    use = CpuUse(30.0, 3.0, 24.0, 57.0, 2)
    _write_rep(tmp_path / "real-1", use)
    _write_rep(tmp_path / "real-2", None)  # written before the CPU was measured
    one, two = reused(tmp_path, 1), reused(tmp_path, 2)
    assert one is not None and two is not None and reused(tmp_path, 3) is None
    assert one.cpu == use and two.cpu is None
    assert one.figures["preserve %"] == 50.0 and one.figures["slo % batch"] == 100.0
    assert one.steps == [] and one.duration_s == 30.0
    shares = CpuShares.of([one, two])
    assert shares is not None
    assert shares.replica_cores == pytest.approx(0.1)
    assert shares.engine_cores == pytest.approx(0.8)
    assert shares.other_cores == pytest.approx(1.0)
    assert shares.machine_busy == pytest.approx(0.95)
    assert CpuShares.of([RealRep({}, [], 1.0)]) is None
