"""The policy glue shared by the vLLM scheduler, the turn runner and the simulator."""

from dataclasses import dataclass

from replicas.pause_budget import is_starved
from replicas.policy import BatchLoad, Outlook, ReplicaProfile, Strategy, make_policy
from replicas.policy.ranking import WaitingRanker
from replicas.turn_plan import TurnPlan
from replicas.types import AugTurn

PROF = ReplicaProfile(0.05, 10.0, 256, 1)


@dataclass
class Req:
    request_id: str
    arrival_time: float
    outlook: Outlook | None
    priority: int = 0


def _ranker(k: int = 1, threshold: int | None = 100) -> WaitingRanker:
    return WaitingRanker(lambda r: r.outlook, make_policy("lamps"), PROF,
                         starvation_threshold_steps=threshold, rerank_every_steps=k,
                         live_profile=False)


def test_lamps_ranks_the_smallest_memory_over_time_first_and_none_keeps_arrival():
    r = _ranker()
    q = r.new_queue()
    q.add_request(Req("long", 0.0, Outlook(1000, 400.0)))
    q.add_request(Req("short", 1.0, Outlook(100, 10.0)))
    q.add_request(Req("unknown", 2.0, None))
    assert [x.request_id for x in q] == ["unknown", "short", "long"]  # None scores 0


def test_scores_are_refreshed_with_the_batch_load_only_every_k_steps():
    r, loads = _ranker(k=3), []
    q = r.new_queue()
    q.add_request(Req("a", 0.0, Outlook(100, 10.0)))

    def load() -> BatchLoad:
        loads.append(1)
        return BatchLoad(10, 100)
    for _ in range(6):
        r.before_step(q, load)
    assert len(loads) == 2 and r.load == BatchLoad(10, 100)


def test_starvation_pass_promotes_a_request_passed_over_more_than_the_threshold():
    r = _ranker(threshold=2)
    q = r.new_queue()
    old = Req("old", 0.0, Outlook(5000, 900.0))
    q.add_request(old)
    for i in range(3):
        newer = Req(f"n{i}", 1.0 + i, Outlook(10, 1.0))
        q.add_request(newer)
        assert q.pop_request() is newer
        r.after_step(q, [newer])
    assert r.guard.promoted("old") and r.guard.num_promotions == 1
    q.add_request(Req("tiny", 9.0, Outlook(1, 1.0)))
    assert q.peek_request() is old                       # promoted goes first


def test_turn_plan_counts_recomputed_tokens_only_after_a_discard():
    plan = TurnPlan(make_policy("lamps"), context_tokens=100)
    assert plan.turn_done(0, 20, cached_tokens=0) == 0   # the first turn recomputes nothing
    s = plan.choose(Outlook(120, 20.0, api_s=1000.0), PROF, BatchLoad(), can_preserve=True)
    assert s is Strategy.DISCARD                          # a long call: holding KV costs more
    plan.resume(result_tokens=10, demoted=False)
    assert plan.context_tokens == 130 and not plan.resumes_preserved
    # 130 tokens, 64 from the prefix cache, 11 never had KV (result + re-sent token)
    assert plan.turn_done(1, 5, cached_tokens=64) == 130 - 64 - 11
    assert plan.calls_by_strategy == {"discard": 1}


def test_turn_plan_resumes_a_preserved_session_unless_demoted():
    plan = TurnPlan(make_policy("infercept"), context_tokens=50)
    plan.turn_done(0, 10, 0)
    assert plan.choose(Outlook(60, 10.0, api_s=0.001), PROF, BatchLoad(), True) is Strategy.PRESERVE
    plan.resume(5, demoted=False)
    assert plan.resumes_preserved and plan.turn_done(1, 3, 0) == 0
    plan.choose(Outlook(68, 10.0, api_s=0.001), PROF, BatchLoad(), True)
    plan.resume(5, demoted=True)
    assert not plan.resumes_preserved


def test_oracle_outlook_reads_the_true_turns():
    plan = TurnPlan(make_policy("lamps-oracle"), context_tokens=10)
    turns = (AugTurn(7, "x", 2.5, 3), AugTurn(4))
    assert plan.outlook(turns, 0, None) == Outlook(10, 7.0, 2.5, 3, 4.0)


def test_starved_when_waiting_and_slots_or_kv_run_short():
    assert not is_starved(0, 8, 0, 8, 1.0, 0.85)
    assert is_starved(1, 6, 2, 8, 0.1, 0.85)
    assert is_starved(1, 1, 0, 8, 0.8, 0.85)
    assert not is_starved(1, 1, 0, 8, 0.5, 0.85)
