"""The simulator's recorded outputs (``golden_cases``) come out byte for byte the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.simulator.golden_cases import CASES, GOLDEN, KEPT, run_case


@pytest.mark.parametrize("name", sorted(CASES))
def test_simulator_outputs_unchanged(name: str, tmp_path: Path) -> None:
    expected = {str(p.relative_to(GOLDEN / name)): p.read_bytes()
                for p in sorted((GOLDEN / name).rglob("*")) if p.name in KEPT}
    assert expected, f"no recorded files for {name}: run python -m tests.unit.simulator.golden_cases --record"
    got = run_case(name, tmp_path)
    assert sorted(got) == sorted(expected)
    for rel, data in expected.items():
        assert got[rel] == data, (f"{name}/{rel} differs from the recording: behaviour changed "
                                  "(record anew only on purpose, in a commit that says why)")
