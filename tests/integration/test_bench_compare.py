"""``augserve bench compare`` on two small configs, as a user runs it.  It starts and
stops its own deployments (``exclusive_ray``: the shared app is stopped first)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.serving import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.exclusive_ray,
              pytest.mark.usefixtures("exclusive_ray")]
TRACE = REPO_ROOT.parent / "shared" / "workloads" / "mars_multi_api.json"


def test_bench_compare_writes_both_configs(tmp_path):
    configs = [REPO_ROOT / "deploy" / "serve" / f"bench-kv-{p}.yaml" for p in ("fifo", "priority")]
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "bench", "compare", "--workload", str(TRACE),
         "--configs", ",".join(map(str, configs)), "--rates", "4", "--limit", "6",
         "--time-scale", "0.02", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "compare.json").read_text())
    assert sorted(r["config"] for r in results) == sorted(map(str, configs))
    assert all(r["summary"]["completed"] == 6 and r["summary"]["failed"] == 0 for r in results)
    assert (out / "compare.png").stat().st_size > 0
    for c in configs:
        assert (out / c.stem / "rate-4" / "results.json").is_file()
