"""Bursty arrivals, the bench block's workload defaults, SLO targets from the server, and
SLO attainment with failures (no server)."""

import argparse
import json
import statistics

import httpx
import jsonschema
import pytest
from pydantic import ValidationError

from benchmarks.client import EndpointError
from benchmarks.generators import ArrivalProcess, bursty_arrivals
from benchmarks.metrics import RequestRecord, summarize
from benchmarks.report import (RESULTS_SCHEMA_PATH, plot_compare, results_object,
                               summary_table)
from benchmarks.runner import (FLAG_DEFAULTS, add_workload_args, compare_defaults,
                               compare_rates, prepare, resolve_settings)
from benchmarks.slo import (DEFAULT_SLO_SHARES, SettingsError, SLOTargets, check_shares,
                            fetch_slo_targets, slo_targets_s, targets_from_response)
from benchmarks.workload import Turn, Workload, WorkloadRequest
from orchestrator.cli import main
from orchestrator.config import BenchDefaults
from orchestrator.serving import REPO_ROOT

# --- bursty arrivals -------------------------------------------------------------------


def in_burst(t, period_s, duty):
    return (t % period_s) < duty * period_s


@pytest.mark.parametrize("factor,period_s,duty", [(4.0, 60.0, 0.25), (3.0, 10.0, 0.5)])
def test_bursty_arrivals_rate_and_burst_density(factor, period_s, duty):
    rate, n = 2.0, 40_000
    ts = bursty_arrivals(n, rate, factor, period_s, duty, seed=5)
    assert ts == sorted(ts) and ts[0] == 0.0
    # the documented mean rate: rate × (1 + duty × (factor − 1))
    mean_rps = rate * (1 + duty * (factor - 1))
    assert ArrivalProcess("bursty", burst_factor=factor, burst_period_s=period_s,
                          burst_duty=duty).mean_rate_rps(rate) == pytest.approx(mean_rps)
    assert (n - 1) / ts[-1] == pytest.approx(mean_rps, rel=0.03)
    # arrivals per second of burst window vs per second of quiet window: about the factor
    whole = int(ts[-1] // period_s)
    inside = sum(1 for t in ts if t < whole * period_s and in_burst(t, period_s, duty))
    outside = sum(1 for t in ts if t < whole * period_s and not in_burst(t, period_s, duty))
    density_ratio = (inside / (duty * period_s)) / (outside / ((1 - duty) * period_s))
    assert density_ratio == pytest.approx(factor, rel=0.08)


def test_bursty_arrivals_are_seeded_and_checked():
    a = bursty_arrivals(500, 1.0, 4, 60, 0.25, seed=1)
    assert a == bursty_arrivals(500, 1.0, 4, 60, 0.25, seed=1)
    assert a != bursty_arrivals(500, 1.0, 4, 60, 0.25, seed=2)
    assert ArrivalProcess("bursty").times(500, 1.0, seed=1) == a
    # duty 1: always in the burst, a Poisson process at rate × factor
    full = bursty_arrivals(20_000, 1.0, 3, 60, 1.0, seed=1)
    gaps = [b - a for a, b in zip(full, full[1:])]
    assert statistics.mean(gaps) == pytest.approx(1 / 3, rel=0.03)
    for bad in [dict(burst_factor=0.5), dict(burst_period_s=0), dict(burst_duty=0),
                dict(burst_duty=1.5)]:
        args = {"burst_factor": 4, "burst_period_s": 60, "burst_duty": 0.25, **bad}
        with pytest.raises(ValueError):
            bursty_arrivals(10, 1.0, seed=0, **args)
    with pytest.raises(ValueError, match="known: poisson, gamma, bursty"):
        ArrivalProcess("burst")


def test_prepare_records_the_arrival_process_in_the_workload_meta():
    reqs = [WorkloadRequest(f"r{i}", (1, 2), None, (Turn(4),)) for i in range(50)]
    w = prepare(Workload("w", reqs), max_context=100, limit=None, seed=0, time_scale=0.5,
                rate_rps=2.0, arrival=ArrivalProcess("bursty", burst_factor=3,
                                                     burst_period_s=20, burst_duty=0.5),
                slo_shares={"batch": 1})
    assert w.meta["arrival"] == "bursty"
    assert (w.meta["burst_factor"], w.meta["burst_period_s"], w.meta["burst_duty"]) == (3, 20, 0.5)
    assert w.meta["effective_rate_rps"] == 4.0 and w.meta["mean_effective_rate_rps"] == 8.0
    assert "cv" not in w.meta
    p = prepare(Workload("w", reqs), max_context=100, limit=None, seed=0, time_scale=1,
                rate_rps=2.0, arrival=ArrivalProcess(), slo_shares={})
    assert p.meta["arrival"] == "poisson" and "burst_factor" not in p.meta


# --- the bench block and the flags ------------------------------------------------------


def test_bench_defaults_accepts_the_workload_fields_and_rejects_bad_ones():
    b = BenchDefaults.model_validate({"arrival": "bursty", "burst_factor": 4, "burst_period_s": 30,
                                      "burst_duty": 0.5, "cv": 1.5,
                                      "slo_shares": {"interactive": 0.5, "batch": 0}})
    assert b.arrival == "bursty" and b.slo_shares == {"interactive": 0.5, "batch": 0}
    assert BenchDefaults().arrival is None and BenchDefaults().slo_shares is None
    for bad in [{"arrival": "burst"}, {"burst_factor": 0.9}, {"burst_duty": 0},
                {"burst_duty": 1.01}, {"burst_period_s": 0}, {"cv": 0},
                {"slo_shares": {"batch": -1, "interactive": 2}}, {"slo_shares": {"batch": 0}},
                {"burst_factr": 4}]:
        with pytest.raises(ValidationError):
            BenchDefaults.model_validate(bad)
    for name, field in BenchDefaults.model_fields.items():
        assert field.description, name


def workload_args(*argv):
    p = argparse.ArgumentParser()
    add_workload_args(p)
    p.add_argument("--rates", default=None)
    return p.parse_args(["--workload", "w.jsonl", *argv])


def test_settings_without_flags_or_bench_block_are_the_old_defaults():
    s = resolve_settings(workload_args())
    assert s.arrival == ArrivalProcess("poisson", 2.0, 4.0, 60.0, 0.25)
    assert s.time_scale == 1.0 and s.limit is None and s.seed == 0
    assert s.slo_shares == DEFAULT_SLO_SHARES
    assert FLAG_DEFAULTS["arrival"] == "poisson"


def test_settings_take_the_bench_block_when_the_flag_is_unset():
    bench = BenchDefaults(arrival="bursty", burst_factor=5, burst_duty=0.2, time_scale=0.05,
                          limit=80, rates=[0.1, 0.2], slo_shares={"interactive": 1, "batch": 1})
    s = resolve_settings(workload_args(), bench)
    assert s.arrival == ArrivalProcess("bursty", 2.0, 5.0, 60.0, 0.2)
    assert (s.time_scale, s.limit) == (0.05, 80)
    assert s.slo_shares == {"interactive": 1, "batch": 1}
    assert compare_rates(workload_args(), bench) == [0.1, 0.2]
    # a flag given wins over the block
    s = resolve_settings(workload_args("--arrival", "gamma", "--cv", "3", "--burst-factor", "2",
                                       "--slo-shares", "standard=1", "--time-scale", "1"), bench)
    assert s.arrival == ArrivalProcess("gamma", 3.0, 2.0, 60.0, 0.2)
    assert s.slo_shares == {"standard": 1.0} and s.time_scale == 1.0
    assert compare_rates(workload_args("--rates", "1,3"), bench) == [1.0, 3.0]
    assert compare_rates(workload_args(), None) == [1.0, 2.0, 4.0]


@pytest.mark.parametrize("argv,needle", [
    (["--burst-duty", "2"], "burst_duty"), (["--burst-factor", "0.5"], "burst_factor"),
    (["--slo-shares", "interactive"], "CLASS=SHARE"),
    (["--slo-shares", "interactive=-1,batch=2"], "slo_shares"),
])
def test_bad_workload_flags_are_refused(argv, needle):
    with pytest.raises(SettingsError, match=needle):
        resolve_settings(workload_args(*argv))


def serve_config(tmp_path, bench):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"applications": [{"name": "a", "import_path": "orchestrator.app:build_app",
                                                  "args": {"bench": bench}}]}))
    return path


def test_compare_defaults_validate_the_bench_block(tmp_path):
    b = compare_defaults(str(serve_config(tmp_path, {"arrival": "bursty", "rates": [1]})))
    assert isinstance(b, BenchDefaults) and b.arrival == "bursty"
    with pytest.raises(SettingsError, match="burst_factr"):
        compare_defaults(str(serve_config(tmp_path, {"burst_factr": 4})))
    lamps = compare_defaults(str(REPO_ROOT / "deploy" / "serve" / "bench-lamps.yaml"))
    assert lamps.time_scale == 0.05 and lamps.arrival is None


def test_compare_fails_on_a_bench_block_typo_before_deploying(tmp_path, capsys):
    wl = tmp_path / "w.jsonl"
    wl.write_text('{"prompt_tokens": 4, "turns": [{"generate_tokens": 1}]}\n')
    config = serve_config(tmp_path, {"arrival": "burst"})
    code = main(["bench", "compare", "--workload", str(wl), "--configs", str(config),
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "c.yaml" in err and "arrival" in err
    assert not (tmp_path / "out").exists()


# --- SLO targets ------------------------------------------------------------------------


SERVER_CLASSES = {"interactive": {"ttft_ms": 1500, "e2e_ms": 20000, "admission": "reject",
                                  "expire": True},
                  "bulk": {"ttft_ms": None, "e2e_ms": 600000, "admission": "best_effort",
                           "expire": False}}


def test_server_targets_are_converted_to_seconds():
    assert targets_from_response(SERVER_CLASSES) == {
        "interactive": {"ttft_s": 1.5, "e2e_s": 20.0}, "bulk": {"ttft_s": None, "e2e_s": 600.0}}
    assert targets_from_response({"x": {}}) == {"x": {"ttft_s": None, "e2e_s": None}}
    for bad in [{"x": {"ttft_ms": "fast"}}, {"x": {"e2e_ms": -1}}, {"x": 3}]:
        with pytest.raises(EndpointError, match="'x'"):
            targets_from_response(bad)


def transport(status, body=None, error=None):
    def handle(request):
        assert request.url.path == "/v1/admin/slo_classes"
        if error:
            raise error
        return httpx.Response(status, json=body)
    return httpx.MockTransport(handle)


def test_fetch_targets_from_the_server_else_the_defaults():
    slo = fetch_slo_targets("http://s", transport=transport(200, {"slo_classes": SERVER_CLASSES}))
    assert slo.source == "server" and slo.targets_s["interactive"]["ttft_s"] == 1.5
    for t in [transport(404, {"error": {}}), transport(200, {"data": []}),
              transport(0, error=httpx.ConnectError("refused"))]:
        slo = fetch_slo_targets("http://s", transport=t)
        assert slo.source == "defaults" and slo.targets_s == slo_targets_s() and slo.note


def test_shares_naming_an_unknown_class_are_refused_listing_the_servers_classes():
    slo = SLOTargets(targets_from_response(SERVER_CLASSES), "server")
    check_shares({"interactive": 0.5, "bulk": 0.5}, slo.targets_s, slo.describe())
    with pytest.raises(SettingsError) as err:
        check_shares(DEFAULT_SLO_SHARES, slo.targets_s, slo.describe())
    msg = str(err.value)
    assert "['batch', 'standard']" in msg and "bulk, interactive" in msg and "server" in msg


# --- attainment with failures -----------------------------------------------------------


def rec(i, slo, status=200, ttft=0.5, e2e=2.0):
    ok = status == 200
    return RequestRecord(f"r{i}", slo, 0.0, send_s=1.0, first_token_s=1.0 + ttft if ok else None,
                         end_s=1.0 + e2e, status=status, output_tokens=4 if ok else 0,
                         error=None if ok else "refused")


def test_rejected_and_expired_requests_are_misses_of_their_class():
    targets = {"interactive": {"ttft_s": 1.0, "e2e_s": 10.0}, "batch": {"ttft_s": None, "e2e_s": 60.0}}
    records = [rec(1, "interactive"), rec(2, "interactive", status=429, e2e=0.01),
               rec(3, "interactive", status=504, e2e=30), rec(4, "interactive", ttft=3.0),
               rec(5, "batch"), rec(6, "batch", status=429, e2e=0.01)]
    s = summarize(records, targets, duration_s=10.0)
    assert s["slo_attainment_per_class"] == {"batch": 0.5, "interactive": 0.25}
    assert s["slo_attainment"] == pytest.approx(2 / 6)
    assert s["failures_by_status"] == {"429": 2, "504": 1}
    assert s["failed_per_class"] == {"batch": 1, "interactive": 2}
    assert s["goodput_rps"] == pytest.approx(0.2) and s["failed"] == 3
    result = results_object({"name": "w", "num_requests": 6}, "a.yaml", 1.0, s, targets, "server")
    jsonschema.validate(result, json.loads(RESULTS_SCHEMA_PATH.read_text()))
    table = summary_table({**result, "summary": {**s, "duration_s": 10.0}})
    assert "SLO attainment per class: batch 50.0%, interactive 25.0%; goodput 0.20 req/s" in table
    assert "(targets: server)" in table


def test_compare_plots_attainment_per_class(tmp_path):
    targets = {"interactive": {"ttft_s": 1.0, "e2e_s": 10.0}, "batch": {"ttft_s": None, "e2e_s": 60.0}}
    results = [results_object({"name": "w", "num_requests": 2}, cfg, rate,
                              summarize([rec(1, "interactive"), rec(2, "batch", status=429)],
                                        targets, 10.0), targets, "defaults")
               for cfg in ("fifo.yaml", "edf.yaml") for rate in (1.0, 2.0)]
    plot_compare(tmp_path, results)
    assert (tmp_path / "compare.png").stat().st_size > 0
    assert (tmp_path / "compare_slo.png").stat().st_size > 0
