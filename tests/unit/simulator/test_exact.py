"""Exact mode: the engine model against the replica's real vLLM scheduler, decision for
decision (:mod:`simulator.exact`): random scripts, hand-made scripts that each pin one
vLLM rule the model once got wrong (with vLLM's deciding line), models with a bug put
back in (the check must see them), and the command."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any

import pytest

from simulator import exact
from simulator.engine import EngineModel, EngineRequest
from simulator.exact import (Agreement, Disagreement, Script, ScriptRequest, ScriptTurn,
                             compare_script, compare_traces, make_script, run_model)
from simulator.kv import KvCache

SEEDS = range(200)


# ---- random scripts -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_traces() -> dict[int, list[exact.StepTrace]]:
    return {seed: exact.run_real(make_script(seed)) for seed in SEEDS}


def test_the_engine_model_agrees_on_200_random_scripts(real_traces):
    agree, disagree = [], []
    for seed, real in real_traces.items():
        result = compare_traces(seed, real, run_model(make_script(seed)))
        (agree if isinstance(result, Agreement) else disagree).append(result)
    assert not disagree, "\n".join(map(str, disagree[:5]))
    # the scripts exercise what they should
    assert sum(a.num_preemptions > 0 for a in agree) > len(SEEDS) // 3
    assert sum(a.num_hit_admissions > 0 for a in agree) > len(SEEDS) // 2
    scripts = [make_script(seed) for seed in SEEDS]
    assert sum(any(r.turns for r in s.requests) for s in scripts) > len(SEEDS) // 5
    assert sum(any(r.abort_step is not None for r in s.requests) for s in scripts) > 20
    assert sum(any(r.priority for r in s.requests) for s in scripts) > 20
    assert sum(not s.reserve_full_isl for s in scripts) > 20
    assert sum(s.watermark > 0 for s in scripts) > 20
    assert sum(any(len(r.prompt) + r.max_tokens > s.max_model_len for r in s.requests)
               for s in scripts) > 10  # requests that vLLM ends at max_model_len
    assert {s.policy for s in scripts} == set(exact.POLICIES)


def test_random_scripts_are_deterministic_and_fit_the_pool():
    assert make_script(7) == make_script(7) != make_script(8)
    for seed in range(300):
        s = make_script(seed)
        assert 8 <= s.num_blocks <= 40 and 2 <= s.max_num_seqs <= 8
        assert 32 <= s.max_num_batched_tokens <= 256 and 4 <= len(s.requests) <= 20
        capacity = (s.num_blocks - 1) * s.block_size
        for r in s.requests:
            assert 1 <= len(r.prompt) <= 200 and 1 <= r.max_tokens <= 40
            total = len(r.prompt) + r.max_tokens + sum(len(t.tokens) + 1 + t.max_tokens
                                                       for t in r.turns)
            assert total <= capacity
            assert r.session or not r.turns


# ---- hand-made scripts ----------------------------------------------------------------------
def _script(requests: list[ScriptRequest], num_blocks: int, budget: int = 64,
            **settings: Any) -> Script:
    return Script(seed=-1, block_size=16, num_blocks=num_blocks, max_num_seqs=4,
                  max_num_batched_tokens=budget, enable_prefix_caching=True, policy="fcfs",
                  requests=tuple(requests), **settings)


def _tokens(first: int, n: int) -> tuple[int, ...]:
    return tuple(range(first, first + n))


def test_a_script_with_preemption_and_a_prefix_hit_agrees():
    # 7 usable blocks; a and b (3 blocks each) grow until b, the later one, is preempted;
    # c arrives after a finished and hits a's first two blocks
    script = _script([ScriptRequest("a", 0, _tokens(1, 40), 30),
                      ScriptRequest("b", 1, _tokens(100, 40), 30),
                      ScriptRequest("c", 40, _tokens(1, 40) + _tokens(500, 8), 4)], 8)
    real = exact.run_real(script)
    assert any(t.preempted == ("b",) for t in real)
    assert any(("c", 32) in t.admitted for t in real)
    result = compare_traces(-1, real, run_model(script))
    assert isinstance(result, Agreement), str(result)
    assert result.num_preemptions == 2 and result.num_hit_admissions >= 1


X = _tokens(1, 32)
#: name -> (script, (step, StepTrace field, what vLLM decides there)): each pins a vLLM
#: rule the engine model once departed from.
RULES: dict[str, tuple[Script, tuple[int, str, Any]]] = {
    # BlockPool.free_blocks (block_pool.py l. 783-803): a freed block without a hash goes
    # to the front of the free queue, a hashed one to the back.  z's two cached blocks sit
    # in the free queue; a frees 2 cached blocks and a partial one; c takes the partial
    # one (not z's second block), so d hits 32 tokens of z (16 when freed to the back)
    "freed_uncached_blocks_go_first": (_script(
        [ScriptRequest("z", 0, X, 1), ScriptRequest("a", 1, _tokens(100, 40), 1),
         ScriptRequest("c", 2, _tokens(200, 10), 1),
         ScriptRequest("d", 3, X + _tokens(300, 8), 1)], 6),
        (3, "admitted", (("d", 32),))),
    # BlockHashToBlockMap (block_pool.py l. 35-125): no de-duplication.  a and b (same
    # prompt, same step): b hits a's first block and caches its own copy of the second;
    # c evicts a's copy; d still hits b's copy: 32 tokens
    "duplicate_blocks_stay_cached": (_script(
        [ScriptRequest("a", 0, X, 1), ScriptRequest("b", 0, X, 1),
         ScriptRequest("c", 1, _tokens(100, 40), 1),
         ScriptRequest("d", 2, X + _tokens(300, 8), 1)], 6, budget=80),
        (2, "admitted", (("d", 32),))),
    # schedule()'s KV-holding branch (scheduler.py l. 1086-1092, allocate_slots l. 1254):
    # a resumed session allocates for its new tokens only.  s pauses holding 21 tokens
    # (2 blocks) and resumes with 4: 25 tokens, still 2 blocks, 7 free (6 when its held
    # tokens are asked for again)
    "resumed_session_allocates_its_new_tokens_only": (_script(
        [ScriptRequest("s", 0, _tokens(1, 20), 2, session=True,
                       turns=(ScriptTurn(1, _tokens(500, 3), 2),))], 10),
        (2, "num_free_blocks", 7)),
    # _update_request_as_session (scheduler.py l. 1683): the session takes its chunk's
    # arrival time.  s resumes at step 2 beside r (arrived at step 1); when s needs a
    # block the priority policy's victim (l. 797) is s, the later arrival
    "resumed_session_takes_its_chunk_arrival": (_script(
        [ScriptRequest("s", 0, _tokens(1, 1), 1, session=True,
                       turns=(ScriptTurn(2, _tokens(500, 15), 40),)),
         ScriptRequest("r", 1, _tokens(100, 30), 40)], 6),
        (18, "preempted", ("s",))),
    # PriorityRequestQueue (request_queue.py l. 131) orders by Request.__lt__
    # (request.py l. 357-367): ties of (priority, arrival) go by request id.  b pauses at
    # step 0, a at step 2; both resume at step 3 and the budget admits one: a
    "kv_holders_tie_by_request_id": (_script(
        [ScriptRequest("b", 0, _tokens(1, 1), 1, session=True,
                       turns=(ScriptTurn(3, _tokens(500, 8), 1),)),
         ScriptRequest("a", 0, _tokens(100, 1), 3, session=True,
                       turns=(ScriptTurn(1, _tokens(600, 8), 1),))], 10, budget=9),
        (3, "scheduled", (("a", 9),))),
    # KVCacheManager.allocate_slots (kv_cache_manager.py l. 576-577): the watermark holds
    # back a waiting request even when it needs no new block.  Without the full-sequence
    # reservation, a resumes at step 13 needing no block while b runs and none is free
    "watermark_holds_back_a_waiting_request_that_needs_no_block": (_script(
        [ScriptRequest("a", 0, _tokens(1, 20), 2, session=True,
                       turns=(ScriptTurn(12, (), 2),)),
         ScriptRequest("b", 0, _tokens(100, 100), 40)], 11, budget=128, watermark=0.1,
        reserve_full_isl=False),
        (13, "scheduled", (("b", 1),))),
    # check_stop (sched/utils.py l. 114-119): a request ends when it reaches max_model_len
    # (FINISHED_LENGTH_CAPPED).  30 prompt tokens and max_tokens 40 under max_model_len 40
    "a_request_ends_at_max_model_len": (_script(
        [ScriptRequest("a", 0, _tokens(1, 30), 40)], 10, max_model_len=40),
        (9, "finished", ("a",))),
}


@pytest.mark.parametrize("name", sorted(RULES))
def test_a_script_that_pins_a_vllm_rule_agrees(name):
    script, (step, field, decision) = RULES[name]
    real = exact.run_real(script)
    assert getattr(real[step], field) == decision
    result = compare_traces(-1, real, run_model(script))
    assert result.agrees, str(result)


# ---- the check can fail -----------------------------------------------------------------
class _OneBlockShort(KvCache):
    def __init__(self, num_blocks: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(num_blocks - 1, *args, **kwargs)


class _FreesToTheBack(KvCache):
    """Every freed block to the back of the free queue (the model's old rule)."""

    def free(self, request_id: str) -> int:
        blocks = self._blocks.pop(request_id, [])
        self._num_cached.pop(request_id, None)
        for b in reversed(blocks):
            self._ref[b] -= 1
            if self._ref[b] == 0:
                self._free[b] = None
        return len(blocks)


class _KeepsFirstArrival(EngineModel):
    """A resumed session keeps its first arrival time (the model's old rule)."""

    def resume(self, request: EngineRequest, tokens: list[int], max_tokens: int,
               arrival_time: float | None = None) -> None:
        super().resume(request, tokens, max_tokens)


def test_a_wrong_model_is_detected(real_traces):
    script = _script([ScriptRequest("a", 0, _tokens(1, 40), 3)], 8)
    result = compare_script(script, kv_cache=_OneBlockShort)
    assert isinstance(result, Disagreement)
    assert (result.step, result.field, result.real, result.model) == (0, "num_free_blocks", 4, 3)
    assert not compare_traces(0, real_traces[0], run_model(make_script(0),
                                                           kv_cache=_OneBlockShort)).agrees


def test_a_subtly_wrong_model_is_detected():
    result = compare_script(RULES["freed_uncached_blocks_go_first"][0],
                            kv_cache=_FreesToTheBack)
    assert isinstance(result, Disagreement)
    assert (result.step, result.field, result.real, result.model) == (
        3, "scheduled", (("d", 8),), (("d", 24),))
    result = compare_script(RULES["resumed_session_takes_its_chunk_arrival"][0],
                            engine=_KeepsFirstArrival)
    assert isinstance(result, Disagreement)
    assert (result.step, result.field, result.real, result.model) == (
        18, "scheduled", (("r", 1),), (("s", 1),))


# ---- the command ----------------------------------------------------------------------------
def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="augserve simulate")
    parser.set_defaults(func=None)  # as simulator/cli.py's `simulate` (its run|compare)
    exact.add_parser(parser.add_subparsers(dest="simulate", required=True))
    return parser.parse_args(argv)


def test_the_exact_command_exits_0_when_all_agree_and_1_otherwise(monkeypatch, capsys):
    assert (_parse(["exact"]).scripts, _parse(["exact"]).first_seed) == (2000, 0)
    monkeypatch.setattr(exact, "compare", lambda seed: Agreement(seed, 10, 1, 2))
    args = _parse(["exact", "--scripts", "3", "--first-seed", "5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "3/3 scripts agree" in out and "seeds 5..7" in out and "30 steps" in out

    def mixed(seed: int) -> Agreement | Disagreement:
        if seed % 2:
            return Disagreement(seed, 4, "preempted", ("a",), ())
        return Agreement(seed, 10)
    monkeypatch.setattr(exact, "compare", mixed)
    args = _parse(["exact", "--scripts", "4"])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert "2/4 scripts agree" in out
    assert "disagree on preempted: 2 scripts (seeds 1, 3)" in out
    assert "seed 1: step 4, preempted: vllm ('a',) != model ()" in out


def test_importing_exact_needs_no_vllm():
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('vllm', 'ray', 'torch'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import simulator.exact as e\n"
            "assert e.make_script(3).requests\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
