"""The replica policy module against hand-computed values (no vLLM, no Ray)."""

import math

import pytest

from replicas.policy import (BatchLoad, InferceptWaste, LampsWaste, OnlineFit, Outlook, Pause,
                             RankKey, ReplicaProfile, StarvationGuard, Strategy, fit_line,
                             make_policy, memory_over_time, profile_from_points)
from replicas.policy.policies import POLICY_NAMES

PROF = ReplicaProfile(a_ms_per_token=0.04, c_ms=16.0, saturation_tokens=384, kv_bytes_per_token=512)
SWAP = ReplicaProfile(0.04, 16.0, 384, 512, swap_bytes_per_s=512e6)
LOAD = BatchLoad(tokens_in_flight=84, running_tokens=2000)


def test_step_time_is_the_line():
    assert PROF.step_s(100) == pytest.approx(0.020)
    assert PROF.step_s(0) == pytest.approx(0.016)


def test_lamps_discard_waste_by_hand():
    # c_h = 384 - 84 = 300; n = ceil(1000/300) - 1 = 3; f_s = (0.04*384+16)/1000 = 0.03136
    # f_ch = 0.04*300/1000 = 0.012; C mod c_h = 100, f_last = (0.04*100+16)/1000 = 0.020
    # w_d = 0.03136*(4*3/2)*300 + 0.012*3*2000 + 0.020*(2000+100) = 56.448 + 72 + 42
    assert LampsWaste().discard(Pause(1000, 0.0), PROF, LOAD) == pytest.approx(170.448)


def test_lamps_preserve_and_choice_around_the_break_even():
    w = LampsWaste()
    assert w.preserve(Pause(1000, 0.1), PROF, LOAD) == pytest.approx(100.0)
    assert w.choose(Pause(1000, 0.1), PROF, LOAD) is Strategy.PRESERVE
    assert w.choose(Pause(1000, 0.2), PROF, LOAD) is Strategy.DISCARD


def test_lamps_swap_waste_by_hand_and_only_where_swap_exists():
    # t_swap per token = 512 / 512e6 = 1e-6 s; n_s = 3; w_s = 1e-6*3*1000 + 2*1e-6*300*3*2000
    w = LampsWaste()
    assert w.swap(Pause(1000, 5.0), SWAP, LOAD) == pytest.approx(3.603)
    assert w.choose(Pause(1000, 5.0), SWAP, LOAD) is Strategy.SWAP
    assert w.waste(Strategy.SWAP, Pause(1000, 5.0), PROF, LOAD) == math.inf
    assert w.choose(Pause(1000, 5.0), PROF, LOAD) is Strategy.DISCARD


def test_ties_go_preserve_first():
    w = LampsWaste()
    pause = Pause(110, 0.0)  # preserve waste 0
    assert w.choose(pause, PROF, BatchLoad()) is Strategy.PRESERVE


def test_infercept_waste_by_hand():
    w = InferceptWaste()
    # discard: t_fwd(1000) * (1000 + 2000) = 0.056 * 3000; swap: 2 * 1e-6 * 1000 * 3000
    assert w.discard(Pause(1000, 0.0), PROF, LOAD) == pytest.approx(168.0)
    assert w.swap(Pause(1000, 0.0), SWAP, LOAD) == pytest.approx(6.0)
    assert w.choose(Pause(1000, 1.0), PROF, LOAD) is Strategy.DISCARD  # 1000 > 168
    assert w.choose(Pause(1000, 0.1), PROF, LOAD) is Strategy.PRESERVE  # 100 < 168


def test_memory_over_time_by_hand():
    step = 0.01936  # (0.04*84 + 16) / 1000
    plain = Outlook(context_tokens=100, output_tokens=10)
    assert memory_over_time(plain, PROF, BatchLoad(84, 0), LampsWaste()) == pytest.approx(
        step * (10 * 100 + 55))
    # with a 1 s call: pause context 110; discard waste = f_last*(0+110) = 0.0204*110 = 2.244
    # (preserve would be 110); after: 4 tokens from 115: step*(4*115 + 10)
    aug = Outlook(100, 10, api_s=1.0, api_tokens=5, after_tokens=4)
    expected = step * 1055 + 2.244 + step * 470
    assert memory_over_time(aug, PROF, BatchLoad(84, 0), LampsWaste()) == pytest.approx(expected)


def test_lamps_prefers_the_smaller_memory_footprint():
    lamps = make_policy("lamps")
    short = Outlook(100, 10)
    long_ = Outlook(100, 200)
    long_pause = Outlook(2000, 10, api_s=30.0, after_tokens=10)
    s = [lamps.score(o, PROF, LOAD) for o in (short, long_, long_pause)]
    assert s[0] < s[1] and s[0] < s[2]


def test_policies_by_name():
    assert set(POLICY_NAMES) == {"fcfs", "infercept", "infercept-oracle", "sjf", "lamps",
                                 "lamps-oracle"}
    fcfs, sjf, inf = make_policy("fcfs"), make_policy("sjf"), make_policy("infercept")
    assert not fcfs.ranks and fcfs.score(Outlook(10, 5), PROF, LOAD) is None
    assert fcfs.strategy(Pause(10, 100.0), PROF, LOAD) is Strategy.DISCARD
    assert sjf.ranks and sjf.score(Outlook(10, 5, after_tokens=7), PROF, LOAD) == 12
    assert sjf.strategy(Pause(10, 0.0), PROF, LOAD) is Strategy.DISCARD
    assert not inf.ranks and inf.strategy(Pause(10, 0.01), PROF, LOAD) is Strategy.PRESERVE
    assert make_policy("lamps-oracle").oracle and not make_policy("lamps").oracle
    with pytest.raises(ValueError, match="unknown replica policy 'nope'"):
        make_policy("nope")


def test_strategy_respects_what_the_replica_allows():
    lamps = make_policy("lamps")
    assert lamps.strategy(Pause(1000, 0.0), PROF, LOAD) is Strategy.PRESERVE
    assert lamps.strategy(Pause(1000, 0.0), PROF, LOAD, can_preserve=False) is Strategy.DISCARD
    assert lamps.strategy(Pause(1000, 5.0), SWAP, LOAD, can_preserve=False) is Strategy.SWAP


def test_rank_key_orders_priority_then_starved_then_score():
    a = RankKey.of("a", 0, 1.0, 50.0, promoted=False)
    b = RankKey.of("b", 0, 2.0, 10.0, promoted=False)
    c = RankKey.of("c", 0, 3.0, 99.0, promoted=True)
    d = RankKey.of("d", -1, 4.0, 1e9, promoted=False)
    e = RankKey.of("e", 0, 0.5, None, promoted=False)
    assert [k.request_id for k in sorted([a, b, c, d, e])] == ["d", "c", "e", "b", "a"]


def test_starvation_guard_promotes_after_threshold_passes():
    g = StarvationGuard(threshold_steps=3)
    waiting = [("old", 1.0), ("young", 9.0)]
    for _ in range(3):
        assert g.after_step(waiting, admitted_arrivals=[5.0]) == []
    assert g.passes("old") == 3 and g.passes("young") == 0
    assert g.after_step(waiting, [5.0]) == ["old"]
    assert g.promoted("old") and g.num_promotions == 1
    assert g.after_step(waiting, []) == []  # a step that admitted nothing passes nobody
    g.forget("old")
    assert not g.promoted("old") and g.passes("old") == 0
    assert StarvationGuard(None).after_step(waiting, [5.0]) == []


def test_fit_line_and_profile_from_points():
    pts = [(16, 16.64), (64, 18.56), (256, 26.24), (1024, 56.96)]  # 0.04 x + 16
    a, c = fit_line(pts)
    assert a == pytest.approx(0.04) and c == pytest.approx(16.0)
    p = profile_from_points(pts, kv_bytes_per_token=512)
    assert p.saturation_tokens == 64 and p.source == "profiled" and not p.can_swap
    assert fit_line([(10, 5.0), (20, 4.0)])[0] == 0.0  # never a negative slope


def test_online_fit_refreshes_after_enough_varied_steps():
    fit = OnlineFit(PROF, min_steps=10)
    for i in range(9):
        fit.add(16 * (i % 4 + 1), 0.08 * 16 * (i % 4 + 1) + 10)
    assert fit.current() is PROF
    for i in range(50):
        fit.add(16 * (i % 4 + 1), 0.08 * 16 * (i % 4 + 1) + 10)
    live = fit.current()
    assert live.source == "live"
    assert live.a_ms_per_token == pytest.approx(0.08) and live.c_ms == pytest.approx(10.0)


def test_outlook_from_extra_accepts_only_finite_non_negative_numbers():
    from replicas.policy import outlook_from_extra
    good = {"context_tokens": 10, "output_tokens": 5.5, "api_s": 1.0, "api_tokens": 2,
            "after_tokens": 3.0}
    assert outlook_from_extra(good) == Outlook(10, 5.5, 1.0, 2, 3.0)
    assert outlook_from_extra({"context_tokens": 1, "output_tokens": 1}).api_s is None
    for bad in (None, "x", {}, dict(good, output_tokens=float("nan")),
                dict(good, api_s=float("inf")), dict(good, context_tokens=-1),
                dict(good, output_tokens="many")):
        assert outlook_from_extra(bad) is None


def test_lamps_discard_waste_is_continuous_at_chunk_multiples():
    w, load = LampsWaste(), BatchLoad(tokens_in_flight=384 - 16)  # c_h = 16
    values = [w.discard(Pause(c, 0.0), PROF, load) for c in (15, 16, 17)]
    assert values[0] < values[1] < values[2]


def test_pause_budget_demotes_the_largest_remaining_hold_first():
    from replicas.pause_budget import PauseBudget, PausedSession

    async def nothing():
        return None
    b = PauseBudget(max_paused=3, kv_watermark=0.8)
    assert b.can_preserve(0.5) and not b.can_preserve(0.9)
    for rid, ctx, end in (("a", 100, 10.0), ("b", 1000, 5.0), ("c", 50, 100.0)):
        b.hold(PausedSession(rid, ctx, end, nothing))
    assert not b.can_preserve(0.1)  # three paused: the slots are spent
    assert b.to_demote(kv_usage=0.5, now_s=0.0) == []
    # remaining hold: a 1000, b 5000, c 5000 -> b or c first (tie: b, inserted first)
    first = b.to_demote(kv_usage=0.9, now_s=0.0)
    assert [s.request_id for s in first] == ["b"] and first[0].demoted
    assert [s.request_id for s in b.to_demote(0.5, 0.0, starved=True)] == ["c"]
    assert b.num_demotions == 2 and len(b) == 1 and b.release("a") is not None
