"""``augserve simulate fidelity --quick``'s whole path on a few requests: the real side on
the vLLM CPU engine (one replica, no Serve), the simulated side, the judged table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema

from benchmarks.report import RESULTS_SCHEMA_PATH

WORKLOAD = [
    {"id": "a", "prompt_tokens": 100, "turns": [
        {"generate_tokens": 20, "api_name": "search", "api_duration_s": 1.0, "api_tokens": 10},
        {"generate_tokens": 10}]},
    {"id": "b", "prompt_tokens": 50, "turns": [{"generate_tokens": 30}]},
    {"id": "c", "prompt_tokens": 300, "turns": [
        {"generate_tokens": 5, "api_name": "calc", "api_duration_s": 0.1, "api_tokens": 3},
        {"generate_tokens": 8}]},
]


def _fidelity(workload: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "simulate", "fidelity", "--workload",
         str(workload), "--configs", "deploy/serve/bench-lamps.yaml", "--quick",
         "--no-progress", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_quick_fidelity_runs_both_sides_and_judges_every_figure(tmp_path: Path) -> None:
    workload = tmp_path / "w.jsonl"
    workload.write_text("\n".join(json.dumps(r) for r in WORKLOAD) + "\n")
    out = tmp_path / "fid"
    proc = _fidelity(workload, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| e2e mean s |" in proc.stdout and "inconclusive" in proc.stdout
    result = json.loads((out / "fidelity.json").read_text())
    (point,) = result["points"]
    assert point["config"] == "deploy/serve/bench-lamps.yaml"
    figures = [j["figure"] for j in point["judgements"]]
    assert figures[:8] == ["e2e mean s", "e2e p50 s", "ttft mean s", "ttft p50 s",
                           "e2e p99 s", "preserve %", "recomputed tokens", "preemptions"]
    # then each SLO class's attainment (the workload's requests get the config's classes)
    assert figures[8:] and all(f.startswith("slo % ") for f in figures[8:])
    assert point["utilization"] is not None and point["saturated"] is False  # 3 requests
    # one repetition has no confidence interval: nothing is claimed as met
    assert {j["verdict"] for j in point["judgements"]} == {"inconclusive"}
    real, sim = point["real"], point["simulated"]
    assert real["e2e mean s"]["n"] == 1 and real["e2e mean s"]["mean"] > 0
    assert sim["e2e mean s"] > 0 and sim["ttft mean s"] > 0
    # both sides wrote the bench schema: the simulated run and the real repetition
    run_dir = out / "bench-lamps" / "rate-0.1"
    assert (run_dir / "requests.csv").exists()
    real_run = json.loads((run_dir / "real-1" / "results.json").read_text())
    schema = json.loads(Path(RESULTS_SCHEMA_PATH).read_text())
    jsonschema.validate(real_run, schema)
    jsonschema.validate(json.loads((run_dir / "results.json").read_text()), schema)
    assert real_run["workload"]["simulated"] is False and real_run["workload"]["repetition"] == 1
    assert real_run["summary"]["completed"] == len(WORKLOAD)
    assert len((run_dir / "real-1" / "requests.csv").read_text().splitlines()) == len(WORKLOAD) + 1
    # every engine step of the real run, timed, and the CPU profile scored on them
    steps = (run_dir / "real-1" / "steps.csv").read_text().splitlines()
    assert steps[0] == "num_tokens,num_seqs,num_prefill_tokens,context_tokens,step_ms,started_s"
    assert len(steps) > 30  # 105 output tokens: at least one step per decode round
    cost = point["step_cost"]
    assert cost["num_steps"] == len(steps) - 1 and cost["mean_abs_error"] >= 0
    assert "cpu-tiny-llama's step cost on the real runs'" in proc.stdout
    assert point["host_gap_ms"] is not None and 0 <= point["host_gap_ms"] < 50
    # where the CPU went: this process (the replica's Python) and the engine (its core and
    # the worker that runs the model), measured
    cpu = json.loads((run_dir / "real-1" / "cpu.json").read_text())
    assert cpu["replica_cpu_s"] > 0 and cpu["engine_cpu_s"] > 0 and cpu["num_cpus"] >= 1
    assert point["cpu"]["engine_cores"] > 0 and 0 < point["cpu"]["machine_busy"] <= 1.0001
    assert "real CPU, cores used on average" in proc.stdout
    counters = json.loads((run_dir / "real-1" / "replica.json").read_text())
    assert real["preemptions"]["mean"] == counters["num_preempted_total"]
    # --reuse-real re-judges from those files: the same real figures, no engine started
    again = _fidelity(workload, out, "--reuse-real")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "vllm" not in again.stderr.lower()
    assert json.loads((out / "fidelity.json").read_text())["points"][0]["real"] == real
