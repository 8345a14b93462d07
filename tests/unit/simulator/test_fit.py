"""The step-cost fit (simulator.fit) on synthetic step records with known coefficients."""

from __future__ import annotations

import random

import pytest

from replicas.policy.profile import StepRecord
from simulator.fit import fit_linear, score, split


def records(c: float, a: float, b: float, n: int = 400, noise: float = 0.0,
            seed: int = 0) -> list[StepRecord]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tokens, context = rng.randint(1, 2048), rng.randint(16, 60_000)
        ms = (c + a * tokens + b * context) * (1 + rng.gauss(0, noise))
        out.append(StepRecord(tokens, rng.randint(1, 64), tokens // 2, context, ms))
    return out


def test_recovers_known_coefficients_exactly_without_noise() -> None:
    cost = fit_linear(records(10.0, 0.0463, 0.0004))
    assert cost.c_ms == pytest.approx(10.0, rel=1e-9)
    assert cost.a_ms_per_token == pytest.approx(0.0463, rel=1e-9)
    assert cost.b_ms_per_context_token == pytest.approx(0.0004, rel=1e-9)
    s = score(cost, records(10.0, 0.0463, 0.0004, seed=1))
    assert s.num_steps == 400 and s.mean_abs_error < 1e-9 and abs(s.total_bias) < 1e-9


def test_noise_shows_in_the_held_out_error_not_in_the_bias() -> None:
    fit, held = split(records(5.0, 0.02, 0.0005, n=2000, noise=0.2), held_out=0.3, seed=0)
    assert len(held) == 600 and len(fit) == 1400
    cost = fit_linear(fit)
    assert cost.a_ms_per_token == pytest.approx(0.02, rel=0.05)
    s = score(cost, held)
    assert 0.1 < s.mean_abs_error < 0.25  # E|N(0, 0.2)| ≈ 0.16 of the mean
    assert abs(s.total_bias) < 0.03


def test_a_negative_coefficient_is_dropped_and_the_rest_refitted() -> None:
    # step time falls with context (not a physical model): b would be negative
    cost = fit_linear(records(20.0, 0.05, -0.0001))
    assert cost.b_ms_per_context_token == 0.0
    assert cost.c_ms >= 0 and cost.a_ms_per_token > 0


def test_too_few_records_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="at least 3 step records"):
        fit_linear(records(1.0, 1.0, 0.0, n=2))


def test_the_split_is_seeded_and_disjoint() -> None:
    rs = records(1.0, 0.01, 0.0, n=50)
    a1, b1 = split(rs, held_out=0.2, seed=3)
    a2, b2 = split(rs, held_out=0.2, seed=3)
    assert a1 == a2 and b1 == b2 and len(b1) == 10
    assert not {id(r) for r in a1} & {id(r) for r in b1}


def test_step_profile_from_recorded_steps_fits_and_keeps_the_derived_entries(
        tmp_path, monkeypatch, capsys) -> None:
    import shutil

    import yaml

    from orchestrator.cli import main
    from simulator.fit import read_steps, write_steps
    from simulator.profiles import PROFILES_DIR, load_profile
    for k, seed in enumerate((0, 1)):  # two "repetitions" at one rate, one at another
        (tmp_path / f"a/real-{k}").mkdir(parents=True)
        write_steps(tmp_path / f"a/real-{k}/steps.csv", records(6.0, 0.02, 0.0001, seed=seed))
    (tmp_path / "b").mkdir()
    write_steps(tmp_path / "b/steps.csv", records(6.0, 0.02, 0.0001, seed=7))
    assert read_steps(tmp_path / "b/steps.csv") == records(6.0, 0.02, 0.0001, seed=7)
    out = tmp_path / "cpu-x.yaml"
    shutil.copy(PROFILES_DIR / "cpu-tiny-llama.yaml", out)
    before = yaml.safe_load(out.read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "step-profile", "--from-steps", "a/real-*/steps.csv",
                 "--held-out", "b/steps.csv", "--out", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["step_cost"]["c_ms"]["value"] == pytest.approx(6.0, rel=1e-3)
    assert doc["step_cost"]["b_ms_per_context_token"]["value"] == pytest.approx(0.0001, rel=1e-3)
    src = doc["step_cost"]["a_ms_per_token"]["source"]
    assert "800 steps fit, 400 held out" in src and "--held-out 'b/steps.csv'" in src
    for key in ("saturation_tokens", "kv_bytes_per_token", "model"):
        assert doc[key] == before[key]
    assert "host_ms_per_step" not in doc  # the synthetic steps carry no start times
    assert load_profile(str(out)).cost().step_ms  # the profile still loads
    # a file that is not a steps file: a clear error, the profile untouched
    (tmp_path / "bad.csv").write_text("tokens,ms\n1,2\n")
    text = out.read_text()
    assert main(["bench", "step-profile", "--from-steps", "bad.csv", "--out", str(out)]) == 2
    assert "bad.csv: not a steps file" in capsys.readouterr().err and out.read_text() == text
    assert main(["bench", "step-profile", "--from-steps", "nothing/*.csv", "--out",
                 str(out)]) == 2
    assert "no steps file matches 'nothing/*.csv'" in capsys.readouterr().err


def test_step_profile_measures_the_host_time_between_steps(tmp_path, monkeypatch) -> None:
    import shutil

    import yaml

    from orchestrator.cli import main
    from simulator.fit import write_steps
    from simulator.profiles import PROFILES_DIR, load_profile
    steps, t = [], 100.0
    for r in records(6.0, 0.02, 0.0001):
        steps.append(StepRecord(r.num_tokens, r.num_seqs, r.num_prefill_tokens,
                                r.context_tokens, r.step_ms, t))
        t += (r.step_ms + 0.5) / 1000  # 0.5 ms of host work after each step
    write_steps(tmp_path / "steps.csv", steps)
    out = tmp_path / "cpu-x.yaml"
    shutil.copy(PROFILES_DIR / "cpu-tiny-llama.yaml", out)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "step-profile", "--from-steps", "steps.csv", "--out", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["host_ms_per_step"]["value"] == pytest.approx(0.5, abs=1e-3)
    assert doc["host_ms_per_step"]["basis"] == "measured"
    assert load_profile(str(out)).host_ms_per_step.value == pytest.approx(0.5, abs=1e-3)


def test_host_gaps_are_the_time_between_steps_outside_the_model_run() -> None:
    from simulator.fit import IDLE_GAP_MS, host_gaps_ms
    steps = [StepRecord(1, 1, 0, 10, 10.0, 100.000), StepRecord(1, 1, 0, 11, 10.0, 100.012),
             StepRecord(1, 1, 0, 12, 10.0, 100.0235),
             StepRecord(1, 1, 0, 13, 10.0, 100.0335 + IDLE_GAP_MS / 1000),  # idle: left out
             StepRecord(1, 1, 0, 14, 10.0, 0.0)]  # no start time: left out
    assert host_gaps_ms(steps) == pytest.approx([2.0, 1.5])
    assert host_gaps_ms(steps[:1]) == []
