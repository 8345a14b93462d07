"""The simulator as the regression oracle of refactors (issue 15): fixed commands whose
``results.json`` and ``requests.csv`` are kept under ``tests/golden/simulator/<case>/``;
``test_golden.py`` runs them again and wants the very same bytes.

A change that alters behaviour on purpose records them anew, in its own commit that says
why::

    python -m tests.unit.simulator.golden_cases --record
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = ROOT / "tests" / "golden" / "simulator"
TRACE = "../shared/workloads/mars_multi_api.json"  # relative: the same text on every machine
KEPT = ("results.json", "requests.csv")

#: case -> the ``augserve simulate run`` arguments (run from the repository root)
CASES: dict[str, list[str]] = {
    "lamps-predicted": ["--config", "deploy/serve/bench-lamps.yaml", "--profile",
                        "a100-40gb-gptj-6b", "--rates", "4", "--duration-s", "60", "--seed", "0"],
    "infercept-noise": ["--config", "deploy/serve/bench-infercept.yaml", "--profile",
                        "a100-40gb-gptj-6b", "--rates", "4", "--duration-s", "60", "--seed", "1",
                        "--noise", "0.3"],
    "fcfs-cpu": ["--config", "deploy/serve/bench-fcfs.yaml", "--profile", "cpu-tiny-llama",
                 "--rates", "2", "--duration-s", "40", "--seed", "2", "--oracle"],
    "qlm-hetero": ["--config", "deploy/serve/hetero-qlm.yaml", "--profile",
                   "large=a100-80gb-7b,medium=l4-7b,small=a10g-7b", "--rates", "8",
                   "--duration-s", "40", "--seed", "0"],
    "edf-hetero": ["--config", "deploy/serve/hetero-edf.yaml", "--profile",
                   "large=a100-80gb-7b,medium=l4-7b,small=a10g-7b", "--rates", "8",
                   "--duration-s", "40", "--seed", "0", "--oracle"],
}


def run_case(name: str, out: Path, extra: Sequence[str] = (),
             kept: Sequence[str] | None = KEPT) -> dict[str, bytes]:
    """Run one case (plus ``extra`` arguments) into ``out``; its ``kept`` files (None:
    every JSON and CSV file) by path relative to ``out``."""
    import os

    from orchestrator.cli import main
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        code = main(["simulate", "run", "--workload", TRACE, *CASES[name], *extra,
                     "--no-progress", "--out", str(out)])
    finally:
        os.chdir(cwd)
    if code != 0:
        raise RuntimeError(f"case {name} exited {code}")
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if (p.name in kept if kept is not None else p.suffix in (".json", ".csv"))}


def record() -> None:
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            files = run_case(name, Path(tmp))
            target = GOLDEN / name
            shutil.rmtree(target, ignore_errors=True)
            for rel, data in files.items():
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                (target / rel).write_bytes(data)
        print(f"recorded {name}: {', '.join(files)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        raise SystemExit(__doc__)
    record()
