"""The KV cache's block accounting and the event loop's order."""

import pytest

from simulator.events import EventLoop, Phase
from simulator.kv import KvCache, KvSeq


def _seq(rid: str, tokens: list[int]) -> KvSeq:
    return KvSeq(rid, tokens)


def test_freed_blocks_join_the_lru_tail_first_and_eviction_drops_the_cached_prefix():
    kv = KvCache(num_blocks=5, block_size=2)            # 4 usable
    a = _seq("a", [1, 2, 3, 4, 5])
    assert kv.allocate_slots(a, 5)
    assert kv.num_free_blocks == 1 and kv.usage == pytest.approx(0.75)
    kv.free("a")
    assert kv.num_free_blocks == 4
    # the same prefix hits its 2 full blocks (at most num_tokens - 1 tokens)
    again = _seq("a2", [1, 2, 3, 4, 5])
    hit, tokens = kv.computed_blocks(again)
    assert tokens == 4 and len(hit) == 2
    # a new request takes free blocks from the LRU front: a's tail block first, then the
    # never-used block, then a's second full block (its prefix is evicted)
    b = _seq("b", [9, 9, 9, 9, 9, 9])
    assert kv.allocate_slots(b, 6)
    assert kv.num_evicted_blocks == 1
    hit, tokens = kv.computed_blocks(_seq("a3", [1, 2, 3, 4, 5]))
    assert tokens == 2                                  # only a's first block survives
    kv.check()


def test_allocation_that_does_not_fit_changes_nothing():
    kv = KvCache(num_blocks=3, block_size=4)
    s = _seq("s", list(range(12)))
    assert not kv.allocate_slots(s, 12)
    assert kv.num_free_blocks == 2 and kv.blocks_of("s") == []


def test_full_sequence_must_fit_checks_the_whole_request_before_its_first_chunk():
    kv = KvCache(num_blocks=3, block_size=4)
    s = _seq("s", list(range(12)))
    assert not kv.allocate_slots(s, 4, full_sequence_must_fit=True)
    assert kv.allocate_slots(s, 4)                      # one chunk alone fits


def test_events_run_by_time_then_phase_then_order_of_scheduling():
    loop, seen = EventLoop(), []
    loop.at(2.0, Phase.ARRIVAL, lambda: seen.append("arrival@2"))
    loop.at(1.0, Phase.TICK, lambda: seen.append("tick@1"))
    loop.at(1.0, Phase.STEP_END, lambda: seen.append("step@1-first"))
    loop.at(1.0, Phase.ARRIVAL, lambda: seen.append("arrival@1"))
    loop.at(1.0, Phase.STEP_END, lambda: seen.append("step@1-second"))
    loop.run()
    assert seen == ["arrival@1", "step@1-first", "step@1-second", "tick@1", "arrival@2"]
    assert loop.now_s == 2.0 and loop.num_events == 5


def test_the_loop_stops_at_until_and_on_stop():
    loop, seen = EventLoop(), []
    for t in (1.0, 2.0, 3.0):
        loop.at(t, Phase.ARRIVAL, lambda t=t: seen.append(t))
    loop.run(until_s=2.5)
    assert seen == [1.0, 2.0] and loop.now_s == 2.5
    loop.at(2.6, Phase.END, loop.stop)
    loop.run()
    assert seen == [1.0, 2.0]
