"""``augserve simulate``: determinism, the bench schema, bad input, import isolation."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st

from benchmarks.report import RESULTS_SCHEMA_PATH
from orchestrator.cli import main
from simulator.profiles import PROFILES_DIR, ProfileError, load_profile

CONFIG = "deploy/serve/bench-lamps.yaml"
HETERO = "deploy/serve/hetero-qlm.yaml"
WORKLOAD = [
    {"id": "a", "prompt_tokens": 100, "turns": [
        {"generate_tokens": 20, "api_name": "search", "api_duration_s": 1.0, "api_tokens": 10},
        {"generate_tokens": 10}]},
    {"id": "b", "prompt_tokens": 50, "turns": [{"generate_tokens": 30}]},
    {"id": "c", "prompt_tokens": 300, "turns": [
        {"generate_tokens": 5, "api_name": "calc", "api_duration_s": 0.1, "api_tokens": 3},
        {"generate_tokens": 40, "api_name": "search", "api_duration_s": 2.0, "api_tokens": 20},
        {"generate_tokens": 8}]},
]


@pytest.fixture()
def workload(tmp_path: Path) -> str:
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in WORKLOAD) + "\n")
    return str(path)


def _run(args: list[str]) -> int:
    return main(["simulate", *args, "--no-progress"])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_runs_of_the_same_command_are_byte_identical(tmp_path, workload):
    args = ["run", "--config", CONFIG, "--workload", workload, "--profile", "a100-40gb-gptj-6b",
            "--rates", "2", "--duration-s", "20", "--seed", "3"]
    assert _run([*args, "--out", str(tmp_path / "one")]) == 0
    assert _run([*args, "--out", str(tmp_path / "two")]) == 0
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one == two and "rate-2/results.json" in one and "rate-2/requests.csv" in one
    result = json.loads(one["rate-2/results.json"])
    jsonschema.validate(result, json.loads(RESULTS_SCHEMA_PATH.read_text()))
    s = result["summary"]
    # a 20 s window of a pool of 4 × 2 × 20 requests: the arrivals in the window, every one
    # either completed or counted as failed (unfinished), none dropped
    assert s["completed"] + s["failed"] == result["workload"]["num_requests"] > 20


def test_compare_runs_each_config_on_the_same_arrivals(tmp_path, workload):
    out = tmp_path / "cmp"
    assert _run(["compare", "--configs", f"{CONFIG},deploy/serve/bench-fcfs.yaml",
                 "--workload", workload, "--profile", "a100-40gb-gptj-6b", "--rates", "1",
                 "--out", str(out)]) == 0
    results = json.loads((out / "compare.json").read_text())
    assert [r["config"] for r in results] == [CONFIG, "deploy/serve/bench-fcfs.yaml"]
    assert all(r["summary"]["completed"] == 3 for r in results)
    assert (out / "compare.png").is_file()


def test_a_fleet_of_gpu_classes_with_a_profile_per_class(tmp_path, workload):
    out = tmp_path / "h"
    assert _run(["run", "--config", HETERO, "--workload", workload, "--rates", "1",
                 "--profile", "large=h100-7b,medium=a100-80gb-7b,small=a10g-7b",
                 "--out", str(out)]) == 0
    queue = json.loads((out / "rate-1" / "queue.json").read_text())
    assert {r["gpu_class"] for r in queue["replicas"]} == {"large", "medium", "small"}
    assert queue["outcomes"]["completed"] == 3


@pytest.mark.parametrize("extra, message", [
    (["--rates", "0"], "--rates"),
    (["--rates", "x"], "--rates"),
    (["--profile", "no-such-profile"], "no-such-profile"),
    (["--profile", "large=h100-7b"], "have no profile"),
    (["--duration-s", "-1"], "--duration-s"),
])
def test_bad_input_fails_at_once_naming_the_key(tmp_path, workload, capsys, extra, message):
    options = {"--config": HETERO, "--workload": workload, "--profile": "h100-7b",
               "--rates": "1", "--out": str(tmp_path / "x"), extra[0]: extra[1]}
    assert _run(["run", *[x for kv in options.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()                # nothing ran half


def test_kv_smaller_than_one_request_is_refused_naming_the_key(tmp_path, workload, capsys):
    cfg = tmp_path / "tiny-kv.yaml"
    cfg.write_text(Path(CONFIG).read_text().replace("num_gpu_blocks_override: 272",
                                                    "num_gpu_blocks_override: 2"))
    profile = tmp_path / "cpu-x.yaml"
    text = (PROFILES_DIR / "a10g-7b.yaml").read_text()
    profile.write_text("\n".join(line for line in text.splitlines()
                                 if not line.startswith("kv_capacity_gib")).replace(
                                     "name: a10g-7b", "name: cpu-x"))
    assert _run(["run", "--config", str(cfg), "--workload", workload, "--profile", str(profile),
                 "--rates", "1", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "less than one request" in err


def test_a_malformed_profile_names_its_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((PROFILES_DIR / "h100-7b.yaml").read_text().replace("name: h100-7b", "name: bad")
                   .replace("basis: derived", "basis: guessed", 1))
    with pytest.raises(ProfileError, match=r"bad\.yaml: key .*basis"):
        load_profile(str(bad))


def test_every_shipped_profile_loads_and_marks_every_number():
    names = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
    assert {"a100-40gb-gptj-6b", "a10g-7b", "l4-7b", "a100-80gb-7b", "h100-7b"} <= set(names)
    from simulator.cost import StepShape
    for name in names:
        p = load_profile(name)
        assert p.kv_bytes_per_token.value > 0
        # a bigger batch never costs less, and a decode step costs at least c
        small, big = StepShape(1, 1, 0, 100), StepShape(512, 8, 512, 4000)
        assert 0 < p.cost().step_ms(small) <= p.cost().step_ms(big)


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.,-x e"), max_size=12))
def test_generated_rate_lists_are_accepted_or_refused_with_a_named_error(text):
    from benchmarks.slo import SettingsError
    from simulator.cli import _rates
    try:
        rates = _rates(text)
    except SettingsError as exc:
        assert "--rates" in str(exc)
    else:
        assert rates and all(r > 0 for r in rates)


def test_the_simulator_never_imports_vllm_or_ray():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('vllm', 'ray'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import pkgutil, importlib, simulator\n"
            "for m in pkgutil.walk_packages(simulator.__path__, 'simulator.'):\n"
            "    if m.name != 'simulator.exact':\n"
            "        importlib.import_module(m.name)\n"
            "import orchestrator.cli\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_fidelity_refuses_bad_settings_before_starting_an_engine(workload: str, tmp_path: Path,
                                                                 capsys) -> None:
    assert _run(["fidelity", "--workload", workload, "--configs", CONFIG, "--reps", "0",
                 "--out", str(tmp_path)]) == 2
    assert "--reps must be >= 1" in capsys.readouterr().err
    assert _run(["fidelity", "--workload", workload, "--configs", "no/such.yaml",
                 "--out", str(tmp_path)]) == 2
    assert "no/such.yaml" in capsys.readouterr().err
    assert not (tmp_path / "fidelity.json").exists()
