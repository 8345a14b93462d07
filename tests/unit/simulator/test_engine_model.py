"""The engine model against hand-computed scenarios (vLLM 0.32's scheduler rules)."""

from simulator.engine import SeqStatus
from tests.unit.simulator.engine_helpers import engine, req, scheduled


def test_chunked_prefill_then_one_token_per_step_then_freed():
    e = engine(budget=16)
    a = req("a", 20, 3)
    e.add(a)
    assert scheduled(e.step()) == [("a", 16)]          # the budget caps the prefill chunk
    assert a.num_turn_tokens == 0                       # a partial prefill samples nothing
    out = e.step()
    assert scheduled(out) == [("a", 4)] and out.sampled == [a]
    assert scheduled(e.step()) == [("a", 1)]
    out = e.step()
    assert scheduled(out) == [("a", 1)] and out.turn_ended == [a]
    assert a.status is SeqStatus.FINISHED and a.num_turn_tokens == 3
    assert e.kv.num_free_blocks == 32                   # 33 blocks, one is the null block
    e.kv.check()


def test_running_first_then_admission_in_queue_order_within_the_budget():
    e = engine(budget=16)
    e.add(req("a", 4, 5, arrival=0.0))
    e.step()
    e.add(req("b", 12, 5, arrival=1.0, base=100))
    e.add(req("c", 12, 5, arrival=2.0, base=200))
    # a decodes first (1 token), b gets its whole prompt (12), c the 3 left (chunked)
    assert scheduled(e.step()) == [("a", 1), ("b", 12), ("c", 3)]


def test_admission_stops_at_the_first_request_whose_whole_sequence_does_not_fit():
    e = engine(num_blocks=6, block_size=4, budget=64)   # 5 usable blocks = 20 tokens
    e.add(req("a", 12, 2, arrival=0.0))                 # 3 blocks
    e.add(req("b", 12, 2, arrival=1.0, base=100))      # 3 more do not fit
    e.add(req("c", 4, 2, arrival=2.0, base=200))       # would fit, but admission stopped at b
    assert scheduled(e.step()) == [("a", 12)]


def test_preemption_takes_the_latest_lowest_priority_running_request():
    e = engine(num_blocks=5, block_size=4, budget=64, max_num_seqs=4)  # 16 tokens of KV
    a, b = req("a", 7, 5, arrival=0.0), req("b", 7, 5, arrival=1.0, base=100)
    e.add(a)
    e.add(b)
    assert scheduled(e.step()) == [("a", 7), ("b", 7)]   # 2 blocks each
    assert scheduled(e.step()) == [("a", 1), ("b", 1)]   # 8 tokens each: still 2 blocks
    e.add(req("c", 2, 1, arrival=2.0, base=200))
    out = e.step()                                       # a needs a third block: none free
    assert [r.request_id for r in out.preempted] == ["b"]
    assert scheduled(out) == [("a", 1)]                   # and no admission this step
    assert b.status is SeqStatus.PREEMPTED and b.num_computed_tokens == 0
    assert b.num_preemptions == 1 and e.num_preemptions == 1
    e.kv.check()


def test_a_higher_priority_request_is_never_the_victim():
    e = engine(num_blocks=5, block_size=4, budget=64)
    a = req("a", 7, 5, arrival=1.0, priority=0)
    b = req("b", 7, 5, arrival=0.0, priority=1, base=100)  # older but lower priority
    e.add(a)
    e.add(b)
    e.step()
    e.step()
    assert [r.request_id for r in e.step().preempted] == ["b"]


def test_prefix_cache_hit_after_discard_counts_only_computed_full_blocks():
    e = engine(block_size=4)
    a = req("a", 10, 2)
    e.add(a)
    e.step()
    e.step()                                   # 10 prompt + 1 decoded token computed
    assert a.status is SeqStatus.FINISHED
    history = list(a.token_ids) + [900, 901, 902, 903, 904]  # the call's result
    nxt = req("a-t1", 0, 1)
    nxt.token_ids = list(history)
    e.add(nxt)
    out = e.step()
    assert nxt.num_cached_tokens == 8          # 11 computed tokens = 2 full blocks
    assert scheduled(out) == [("a-t1", len(history) - 8)]


def test_preserved_session_holds_its_blocks_and_a_slot_and_resumes_with_new_tokens_only():
    e = engine(block_size=4, max_num_seqs=2)
    s = req("s", 10, 2, session=True)
    e.add(s)
    e.step()
    out = e.step()
    assert out.turn_ended == [s] and s.status is SeqStatus.PAUSED
    held = len(e.kv.blocks_of("s"))
    assert held == 3 and e.num_paused == 1
    e.add(req("b", 4, 9, base=100))
    e.add(req("c", 4, 9, base=200))
    assert scheduled(e.step()) == [("b", 4)]        # the paused session takes the second slot
    e.resume(s, [700, 701, 702], 2)
    assert s.num_tokens - s.num_computed_tokens == 4  # the re-sent last token + the result
    out = e.step()                                  # from kv_holding first: it holds its KV
    assert ("s", 4) in scheduled(out) and s.status is SeqStatus.RUNNING
    e.kv.check()


def test_max_num_seqs_counts_paused_sessions():
    e = engine(max_num_seqs=1)
    s = req("s", 4, 1, session=True)
    e.add(s)
    e.step()
    assert s.status is SeqStatus.PAUSED
    e.add(req("b", 4, 1, base=100))
    assert scheduled(e.step()) == []                # the only slot is held by the session
    e.close(s)
    assert scheduled(e.step()) == [("b", 4)]


def test_swapped_in_tokens_are_restored_without_compute():
    e = engine(block_size=4)
    r = req("r", 20, 2)
    r.swapped_in_tokens = 16
    e.add(r)
    out = e.step()
    assert scheduled(out) == [("r", 4)] and out.swap_in_tokens == 16
    assert len(e.kv.blocks_of("r")) == 5


def test_watermark_holds_back_admission_while_something_runs():
    e = engine(num_blocks=11, block_size=4, budget=64, watermark=0.2)  # 2 blocks kept free
    e.add(req("a", 16, 5))                     # 4 blocks: admitted (nothing runs yet)
    e.step()
    e.add(req("b", 16, 5, base=100))           # 4 more + 2 watermark > 6 free
    assert scheduled(e.step()) == [("a", 1)]
