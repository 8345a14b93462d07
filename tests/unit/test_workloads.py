"""Workload parsing, generators and metric math (no server)."""

import json
import statistics

import pytest

from benchmarks.generators import (INFERCEPT_TYPES, ArrivalProcess, gamma_arrivals,
                                   infercept_workload, poisson_arrivals)
from benchmarks.metrics import RequestRecord, summarize
from benchmarks.runner import prepare
from benchmarks.trace import load_trace
from benchmarks.workload import WorkloadError, dump_jsonl, load_jsonl
from orchestrator.serving import REPO_ROOT

TRACE = REPO_ROOT.parent / "shared" / "workloads" / "mars_multi_api.json"


def words(text):  # a stand-in tokenizer: deterministic, ~1 token per word
    return list(range(len(text.split())))


@pytest.fixture(scope="module")
def trace():
    assert TRACE.is_file(), f"the shared trace must be beside the repository: {TRACE}"
    return load_trace(TRACE, words)


def test_trace_counts_and_shapes(trace):
    assert len(trace.requests) == 397
    assert sum(r.num_api_calls for r in trace.requests) == 1841
    kinds = {r.kind for r in trace.requests}
    assert kinds == {"tokens", "text"}
    assert sum(r.kind == "text" for r in trace.requests) == 195
    first = next(r for r in trace.requests if r.request_id == "0a84bcdff8434b23971032489f44b90a")
    assert len(first.prompt_token_ids) == 392
    assert [t.generate_tokens for t in first.turns] == [127, 47, 48, 82, 76]
    assert [t.api_tokens for t in first.turns[:4]] == [21, 23, 23, 22]
    assert first.turns[0].api_name == "math" and first.turns[-1].api_name is None
    # the replayed context of turn k+1 is turn k's context + generated + API tokens, which
    # matches the trace's own prompt_tokens of the next segment (540 = 392 + 127 + 21)
    assert first.total_context_tokens(392) - sum(
        t.generate_tokens + t.api_tokens for t in first.turns[1:]) == 540


def test_subset_scale_and_arrivals_are_deterministic(trace):
    a = prepare(trace, max_context=8192, limit=20, seed=3, time_scale=0.05, rate_rps=2,
                arrival=ArrivalProcess(), slo_shares={"interactive": 1, "batch": 1})
    b = prepare(trace, max_context=8192, limit=20, seed=3, time_scale=0.05, rate_rps=2,
                arrival=ArrivalProcess(), slo_shares={"interactive": 1, "batch": 1})
    assert [r.request_id for r in a.requests] == [r.request_id for r in b.requests]
    assert [r.arrival_s for r in a.requests] == [r.arrival_s for r in b.requests]
    assert {r.slo for r in a.requests} <= {"interactive", "batch"}
    orig = {r.request_id: r for r in trace.requests}
    r0 = a.requests[0]
    assert r0.api_time_s == pytest.approx(orig[r0.request_id].api_time_s * 0.05)
    small = prepare(trace, max_context=1000, limit=None, seed=0, time_scale=1, rate_rps=1,
                    arrival=ArrivalProcess(), slo_shares={})
    assert small.meta["dropped_over_context"] > 0
    assert all(r.total_context_tokens(len(r.prompt_token_ids)) <= 1000 for r in small.requests)


def test_poisson_and_gamma_rates():
    p = poisson_arrivals(5000, 4.0, seed=1)
    assert p == poisson_arrivals(5000, 4.0, seed=1) and p != poisson_arrivals(5000, 4.0, seed=2)
    gaps = [b - a for a, b in zip(p, p[1:])]
    assert statistics.mean(gaps) == pytest.approx(0.25, rel=0.05)
    g = gamma_arrivals(5000, 4.0, cv=3.0, seed=1)
    ggaps = [b - a for a, b in zip(g, g[1:])]
    assert statistics.mean(ggaps) == pytest.approx(0.25, rel=0.1)
    assert statistics.stdev(ggaps) / statistics.mean(ggaps) == pytest.approx(3.0, rel=0.15)


def test_infercept_generator_means():
    w = infercept_workload(3000, seed=7)
    for kind, (mean_s, calls) in INFERCEPT_TYPES.items():
        rs = [r for r in w.requests if r.kind == kind]
        assert statistics.mean(r.num_api_calls for r in rs) == pytest.approx(max(calls, 1), rel=0.15)
        durations = [t.api_duration_s for r in rs for t in r.turns if t.api_name]
        assert statistics.mean(durations) == pytest.approx(mean_s, rel=0.15)
    assert infercept_workload(5, seed=1).requests == infercept_workload(5, seed=1).requests


def test_jsonl_round_trip_and_errors(tmp_path):
    w = infercept_workload(4, seed=2)
    path = tmp_path / "w.jsonl"
    dump_jsonl(w, path)
    back = load_jsonl(path)
    assert [r.turns for r in back.requests] == [r.turns for r in w.requests]
    bad_lines = [
        ('{"turns": [{"generate_tokens": 3}]}', "line 1", "prompt"),
        ('{"prompt": "x", "turns": [{"generate_tokens": "3"}]}', "turns[0]", "generate_tokens"),
        ('{"prompt": "x", "turns": [{"generate_tokens": 3, "api_name": "a"}]}', "turns[0]",
         "api_duration_s"),
        ('{"prompt": "x"}', ":1", "turns"),
        ('{"prompt": "x", "turns": [{"generate_tokens": 3}], "arrival_s": -1}', ":1", "arrival_s"),
        ("not json", ":1", "JSON"),
    ]
    for line, where, key in bad_lines:
        f = tmp_path / "bad.jsonl"
        f.write_text(json.dumps({"prompt": "ok", "turns": [{"generate_tokens": 1}]}) + "\n" + line + "\n"
                     if where != ":1" and where != "line 1" else line + "\n")
        with pytest.raises(WorkloadError) as err:
            load_jsonl(f)
        assert key in str(err.value)
        assert "bad.jsonl:" in str(err.value)


def rec(i, *, send=0.0, first=None, end=None, tokens=0, api=0.0, status=200, slo="a"):
    r = RequestRecord(f"r{i}", slo, 0.0, send_s=send, first_token_s=first, end_s=end,
                      status=status, output_tokens=tokens, api_time_s=api)
    return r


def test_metric_math_on_hand_made_timelines():
    records = [
        rec(1, send=1, first=2, end=12, tokens=11, api=5),   # e2e 11 s
        rec(2, send=1, first=1.5, end=3.5, tokens=5),        # e2e 2.5
        rec(3, send=2, status=503, end=2.1),                 # failed
    ]
    r1, r2 = records[0], records[1]
    assert r1.e2e_s == 11 and r1.ttft_s == 1
    assert r1.tpot_s == pytest.approx((11 - 1 - 5) / 10)
    assert r1.normalized_latency_s == pytest.approx((11 - 5) / 11)
    assert r2.tpot_s == pytest.approx(2 / 4)
    targets = {"a": {"ttft_s": 1.2, "e2e_s": 5.0}}
    s = summarize(records, targets, duration_s=10.0)
    assert s["completed"] == 2 and s["failed"] == 1
    assert s["mean_e2e_s"] == pytest.approx(6.75)
    assert s["slo_attainment"] == pytest.approx(1 / 3)  # only r2 meets both targets
    assert s["goodput_rps"] == pytest.approx(0.1) and s["throughput_rps"] == pytest.approx(0.2)
    assert s["output_tokens_per_s"] == pytest.approx(1.6)
    assert s["failures_by_status"] == {"503": 1} and s["not_sent"] == 0
    # arrival, not send, is the start: a client that sends late cannot hide latency
    late = rec(4, send=2.0, first=3.0, end=4.0, tokens=2)
    late.scheduled_s = 1.0
    assert late.e2e_s == 3.0 and late.ttft_s == 2.0
    never = rec(5)
    never.send_s = 0.0
    assert summarize([late, never], {}, 1.0)["not_sent"] == 1


def test_a_negative_api_result_length_in_a_trace_is_clamped_to_zero(tmp_path):
    """The multi-API trace gives -2 tokens for four API results; the API refuses negative
    ``api_tokens`` (400), so the loader clamps them, for the simulator and the client alike."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"r": [
        {"prompt_tokens": 10, "completion_tokens": 3, "api_time": 0.5, "api_token_length": -2},
        {"completion_tokens": 4}]}))
    (req,) = load_trace(str(path), lambda text: text.split()).requests
    assert [t.api_tokens for t in req.turns] == [0, 0]
    assert req.turns[0].api_name is not None and req.turns[0].api_duration_s == 0.5
