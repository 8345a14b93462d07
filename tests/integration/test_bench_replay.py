"""A scaled replay of the real trace against the real deployment."""

from __future__ import annotations

import csv
import json

import jsonschema
import pytest

from benchmarks.report import RESULTS_SCHEMA_PATH
from orchestrator.cli import main
from orchestrator.serving import REPO_ROOT

pytestmark = pytest.mark.integration
TRACE = REPO_ROOT.parent / "shared" / "workloads" / "mars_multi_api.json"


def test_scaled_trace_replay_completes_every_turn_as_asked(app, tmp_path):
    out = tmp_path / "run"
    code = main(["bench", "run", "--workload", str(TRACE), "--url", app.base_url, "--rate", "2",
                 "--limit", "20", "--time-scale", "0.05", "--out", str(out), "--no-progress"])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    jsonschema.validate(result, json.loads(RESULTS_SCHEMA_PATH.read_text()))
    s = result["summary"]
    assert s["completed"] == 20 and s["failed"] == 0
    assert result["workload"]["num_requests"] == 20 and result["workload"]["num_api_calls"] > 20
    rows = list(csv.DictReader(open(out / "requests.csv")))
    assert len(rows) == 20
    assert all(r["turns_as_asked"] == "True" for r in rows)
    assert all(r["output_tokens"] == r["expected_tokens"] for r in rows)
    assert all(float(r["api_time_s"]) >= 0 for r in rows)


def test_server_errors_are_counted_and_do_not_end_the_run(app, tmp_path):
    wl = tmp_path / "w.jsonl"
    lines = [{"prompt_token_ids": [5, 6, 7], "turns": [
                 {"generate_tokens": 4, "api_name": "calc", "api_duration_s": 0.05,
                  "api_tokens": 3}, {"generate_tokens": 2}]},
             {"prompt_token_ids": [99999], "turns": [{"generate_tokens": 4}]},  # out of vocab
             {"prompt_tokens": 10, "turns": [{"generate_tokens": 3}]}]
    wl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "run"
    assert main(["bench", "run", "--workload", str(wl), "--url", app.base_url, "--rate", "5",
                 "--out", str(out), "--no-progress"]) == 0
    s = json.loads((out / "results.json").read_text())["summary"]
    assert s["completed"] == 2 and s["failed"] == 1 and s["failures_by_status"] == {"400": 1}
