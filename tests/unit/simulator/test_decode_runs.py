"""Decode runs (``EngineModel(fast_decode=True)``) against stepping request by request:
on exact mode's random scripts (small KV pools that preempt, shared prefixes, streaming
sessions, aborts) every step decides the same, and at random points where the run is
applied (:meth:`EngineModel.settle`, as a replica's read would) the whole engine state —
tokens, computed tokens, blocks, the free queue's order, the prefix cache — is the same;
and whole simulations write byte-identical files either way."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from simulator import exact
from simulator.engine import EngineModel, StepResult, TokenCounter
from simulator.exact import StepTrace


class _Side(exact._ModelSide):
    """Exact mode's model side (its add, resume, close, idle) on a :class:`TokenCounter`,
    with or without decode runs; after a random fifth of the steps (``sync_seed``) the
    run is applied and the engine state recorded."""

    def __init__(self, script: exact.Script, fast: bool, sync_seed: int) -> None:
        m = exact.make_model(script)
        super().__init__(EngineModel(m.limits, m.kv, m.ranker, TokenCounter(),
                                     fast_decode=fast))
        self.rng = random.Random(sync_seed)
        self.states: list[Any] = []
        self.shapes: list[tuple[int, int, int, int]] = []
        self.num_run_steps = 0

    def step(self) -> StepTrace:
        e = self.engine
        out: StepResult = e.step()
        if out.run is not None:
            self.num_run_steps += 1
            scheduled = tuple((r.request_id, 1) for r in out.run.requests)
        else:
            scheduled = tuple((r.request_id, n) for r, n in out.scheduled)
        self.shapes.append((out.shape.num_tokens, out.shape.num_seqs,
                            out.shape.num_prefill_tokens, out.shape.context_tokens))
        if self.rng.random() < 0.2:  # a read: the run is applied here
            e.settle()
            self.states.append((len(self.states), _state(e)))
        return StepTrace(
            scheduled=scheduled, preempted=tuple(sorted(r.request_id for r in out.preempted)),
            admitted=tuple((r.request_id, r.num_cached_tokens) for r in out.admitted),
            num_free_blocks=-1,  # known only once the run is applied: in the states
            finished=tuple(r.request_id for r in out.turn_ended),
            running=tuple(r.request_id for r in e.running),
            waiting=tuple(r.request_id for r in [*e.kv_holding, *e.waiting]))


def _state(e: EngineModel) -> Any:
    kv = e.kv
    seqs = [*e.running, *e.kv_holding, *e.waiting]
    return (tuple((r.request_id, tuple(r.token_ids), r.num_computed_tokens, r.num_turn_tokens,
                   r.status.value, tuple(kv.blocks_of(r.request_id))) for r in seqs),
            tuple(kv._free), tuple(sorted(kv._hash_of.items())),
            tuple((h, tuple(b)) for h, b in kv._cached.items()), kv.num_evicted_blocks,
            e.last_step_tokens, e.batch_load())


@pytest.mark.parametrize("chunk", range(4))
def test_decode_runs_match_stepping_on_random_scripts(chunk: int) -> None:
    run_steps = total = 0
    for seed in range(chunk * 50, chunk * 50 + 50):
        script = exact.make_script(seed)
        micro, fast = _Side(script, False, seed), _Side(script, True, seed)
        a = exact._drive(script, micro, None, micro.engine)
        b = exact._drive(script, fast, None, fast.engine)
        fast.engine.settle()
        assert a == b, f"seed {seed}: the steps differ"
        assert micro.shapes == fast.shapes, f"seed {seed}: the step shapes differ"
        assert micro.states == fast.states, f"seed {seed}: the applied state differs"
        assert _state(micro.engine) == _state(fast.engine), f"seed {seed}: the end state differs"
        run_steps += fast.num_run_steps
        total += len(b)
    assert run_steps > total // 20, (run_steps, total)  # the fast path is exercised


@pytest.mark.parametrize("name", ["infercept-noise", "qlm-hetero"])
def test_simulations_are_byte_identical_with_and_without_decode_runs(
        name: str, tmp_path: Path) -> None:
    from tests.unit.simulator.golden_cases import CASES, run_case
    assert name in CASES
    fast = run_case(name, tmp_path / "fast", extra=["--duration-s", "30"], kept=None)
    micro = run_case(name, tmp_path / "micro", extra=["--duration-s", "30", "--micro-steps"],
                     kept=None)
    assert sorted(fast) == sorted(micro) and len(fast) >= 4, sorted(fast)
    for rel, data in fast.items():
        assert micro[rel] == data, f"{name}/{rel} differs with --micro-steps"
