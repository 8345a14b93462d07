"""The bench commands' behaviour on bad input and interruption (trivial local server, no Ray)."""

import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from benchmarks.client_capacity import free_port
from orchestrator.cli import main


@pytest.fixture(scope="module")
def trivial_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.trivial_server", str(port)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait()


def write_jsonl(path, n=5, gap_s=0.0):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt_tokens": 4, "arrival_s": i * gap_s,
                                "turns": [{"generate_tokens": 1}]}) + "\n")


def test_unreachable_url_fails_fast_with_a_clear_message(tmp_path, capsys):
    wl = tmp_path / "w.jsonl"
    write_jsonl(wl)
    t = time.monotonic()
    code = main(["bench", "run", "--workload", str(wl), "--url", f"http://127.0.0.1:{free_port()}",
                 "--rate", "1", "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2 and time.monotonic() - t < 10
    assert "cannot reach" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_malformed_workload_fails_before_sending_naming_line_and_key(tmp_path, capsys, trivial_url):
    wl = tmp_path / "w.jsonl"
    wl.write_text('{"prompt_tokens": 4, "turns": [{"generate_tokens": 1}]}\n'
                  '{"prompt_tokens": 4, "turns": [{"generate_tokens": 0}]}\n')
    code = main(["bench", "run", "--workload", str(wl), "--url", trivial_url, "--rate", "1",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "w.jsonl:2" in err and "generate_tokens" in err
    assert not (tmp_path / "out").exists()


def test_run_against_an_endpoint_writes_every_artifact(tmp_path, trivial_url):
    wl = tmp_path / "w.jsonl"
    write_jsonl(wl, n=20, gap_s=0.01)
    out = tmp_path / "out"
    assert main(["bench", "run", "--workload", str(wl), "--url", trivial_url, "--rate", "1",
                 "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["summary"]["completed"] == 20 and result["summary"]["failed"] == 0
    for name in ("requests.csv", "latency_cdf.png", "ttft_cdf.png", "slo_attainment.png"):
        assert (out / name).stat().st_size > 0


def test_ctrl_c_writes_partial_results(tmp_path, trivial_url):
    wl = tmp_path / "w.jsonl"
    write_jsonl(wl, n=200, gap_s=0.05)  # 10 s of arrivals
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "bench", "run", "--workload",
                             str(wl), "--url", trivial_url, "--rate", "1", "--out", str(out),
                             "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    served0 = httpx.get(f"{trivial_url}/stats").json()["served"]
    deadline = time.monotonic() + 60  # the replay has begun (a loaded machine starts slowly)
    while httpx.get(f"{trivial_url}/stats").json()["served"] < served0 + 10:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["workload"]["stopped_early"] is True
    s = result["summary"]
    assert 0 < s["completed"] < 200 and s["not_sent"] > 0
    assert s["completed"] + s["failed"] + s["not_sent"] == 200


def test_shares_naming_a_class_the_server_lacks_fail_before_sending(tmp_path, capsys, trivial_url):
    wl = tmp_path / "w.jsonl"
    write_jsonl(wl)
    code = main(["bench", "run", "--workload", str(wl), "--url", trivial_url, "--rate", "1",
                 "--slo-shares", "interactive=0.5,bulk=0.5", "--out", str(tmp_path / "out"),
                 "--no-progress"])
    err = capsys.readouterr().err
    # the trivial server lists no classes: the defaults are the server's, and say so
    assert code == 2 and "['bulk']" in err and "batch, interactive, standard" in err
    assert "default classes" in err
    assert not (tmp_path / "out").exists()


def test_compare_refuses_shares_a_config_does_not_define_before_deploying(tmp_path, capsys):
    from orchestrator.serving import REPO_ROOT
    wl = tmp_path / "w.jsonl"
    write_jsonl(wl)
    config = REPO_ROOT / "deploy" / "serve" / "bench-lamps.yaml"
    code = main(["bench", "compare", "--workload", str(wl), "--configs", str(config),
                 "--slo-shares", "bulk=1", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "['bulk']" in err and "bench-lamps.yaml defines" in err
    assert not (tmp_path / "out").exists()


def test_bursty_run_records_arrivals_and_slo_targets(tmp_path, trivial_url):
    import jsonschema

    from benchmarks.report import RESULTS_SCHEMA_PATH
    wl = tmp_path / "w.jsonl"
    with open(wl, "w") as f:
        for _ in range(20):
            f.write(json.dumps({"prompt_tokens": 4, "turns": [{"generate_tokens": 1}]}) + "\n")
    out = tmp_path / "out"
    assert main(["bench", "run", "--workload", str(wl), "--url", trivial_url, "--rate", "10",
                 "--arrival", "bursty", "--burst-period-s", "1", "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads((out / "results.json").read_text())
    jsonschema.validate(result, json.loads(RESULTS_SCHEMA_PATH.read_text()))
    w = result["workload"]
    assert (w["arrival"], w["burst_factor"], w["burst_period_s"], w["burst_duty"]) == (
        "bursty", 4.0, 1.0, 0.25)
    assert w["mean_effective_rate_rps"] == pytest.approx(17.5)
    assert result["slo_targets_source"] == "defaults"
    assert result["slo_targets"]["interactive"] == {"ttft_s": 2.0, "e2e_s": 20.0}
    assert result["summary"]["completed"] == 20
