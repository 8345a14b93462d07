"""Where a run's CPU went (benchmarks.cpu_use): real processes, real CPU times."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.cpu_use import CpuMeter, CpuUse


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_meter_counts_this_process_and_the_machine() -> None:
    meter = CpuMeter.this_process([])
    meter.start()
    _burn(0.3)
    use = meter.stop()
    assert use.replica_cpu_s >= 0.25 and use.engine_cpu_s == 0.0  # this process burnt 0.3 s
    assert use.wall_s >= use.replica_cpu_s * 0.9
    assert use.num_cpus >= 1 and 0.0 < use.machine_busy_share <= 1.0 + 1e-6
    assert use.machine_busy_s >= use.replica_cpu_s * 0.9
    assert use.other_cpu_s >= 0.0


def test_the_meter_counts_an_engine_cores_worker() -> None:
    # vLLM's engine core runs the model in a child process (VLLM::Worker)
    worker_code = ("import time\nend = time.process_time() + 0.5\n"
                   "while time.process_time() < end: pass\ntime.sleep(60)")
    core_code = f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', {worker_code!r}]).wait()\n"
    core = subprocess.Popen([sys.executable, "-c", core_code])
    import psutil
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(core.pid).children() and time.monotonic() < deadline:
            time.sleep(0.01)
        meter = CpuMeter([], [core.pid])
        meter.start()
        time.sleep(2.0)  # the worker burns its 0.5 s meanwhile, then sleeps
        use = meter.stop()
    finally:
        for child in psutil.Process(core.pid).children(recursive=True):
            child.kill()
        core.kill()
        core.wait()
    assert use.replica_cpu_s == 0.0
    assert use.engine_cpu_s >= 0.3  # the worker's CPU (the core itself only waits)


def test_a_process_that_is_gone_counts_nothing() -> None:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    meter = CpuMeter([p.pid], [p.pid, 0, -1])
    meter.start()
    use = meter.stop()
    assert use.replica_cpu_s == 0.0 and use.engine_cpu_s == 0.0


def test_cpu_use_round_trips_and_a_bad_file_is_named(tmp_path: Path) -> None:
    use = CpuUse(10.0, 2.0, 6.0, 19.0, 2)
    assert use.machine_busy_share == pytest.approx(0.95)
    assert use.other_cpu_s == pytest.approx(11.0)
    use.write(tmp_path / "cpu.json")
    assert CpuUse.read(tmp_path / "cpu.json") == use
    assert json.loads((tmp_path / "cpu.json").read_text())["other_cpu_s"] == pytest.approx(11.0)
    assert CpuUse(0.0, 0.0, 0.0, 0.0, 2).machine_busy_share == 0.0
    (tmp_path / "bad.json").write_text(json.dumps({"wall_s": 1.0}))
    with pytest.raises(ValueError, match="bad.json: not a CPU-use file"):
        CpuUse.read(tmp_path / "bad.json")
