import math
import random
import time

import pytest

from orchestrator.policies.qlm_plan import (
    Plan,
    PlanGroup,
    PlanReplica,
    completion_times,
    objective,
    plan_brute_force,
    plan_greedy,
    plan_milp,
)

PLANNERS = {
    "milp": lambda gs, rs, **kw: plan_milp(gs, rs, time_limit_s=5.0, **kw),
    "greedy": plan_greedy,
    "brute_force": plan_brute_force,
}


def group(key: str, work_tokens: float, deadline_s: float, model: str = "a",
          num_requests: int = 1) -> PlanGroup:
    return PlanGroup(key=key, model=model, num_requests=num_requests,
                     work_tokens=work_tokens, deadline_s=deadline_s)


def replica(replica_id: str, tokens_per_s: float, backlog_s: float = 0.0,
            model: str = "a") -> PlanReplica:
    return PlanReplica(replica_id=replica_id, model=model, tokens_per_s=tokens_per_s,
                       backlog_s=backlog_s)


def assert_consistent(plan: Plan, groups: list[PlanGroup], replicas: list[PlanReplica],
                      swap_cost_s: float, allow_model_swap: bool) -> None:
    """The plan's numbers come from the shared model and respect the allowed pairs."""
    by_id = {r.replica_id: r for r in replicas}
    by_key = {g.key: g for g in groups}
    placeable = {g.key for g in groups
                 if any(allow_model_swap or g.model == r.model for r in replicas)}
    assert set(plan.assignment) == placeable
    for key, replica_id in plan.assignment.items():
        assert allow_model_swap or by_key[key].model == by_id[replica_id].model
    done = completion_times(groups, replicas, plan.assignment, swap_cost_s)
    assert plan.lateness_s == pytest.approx(
        {k: max(0.0, done[k] - by_key[k].deadline_s) for k in done})
    assert plan.objective == pytest.approx(
        objective(groups, replicas, plan.assignment, swap_cost_s))


def test_one_replica_runs_groups_in_deadline_order():
    groups = [group("late", 30, deadline_s=10), group("soon", 50, deadline_s=5, num_requests=3)]
    replicas = [replica("r", tokens_per_s=10, backlog_s=2)]
    assignment = {"late": "r", "soon": "r"}
    # "soon" first: 2 + 50/10 = 7 s; then "late": 2 + 80/10 = 10 s.
    assert completion_times(groups, replicas, assignment, 0.0) == pytest.approx(
        {"late": 10.0, "soon": 7.0})
    assert objective(groups, replicas, assignment, 0.0) == pytest.approx(3 * 2.0)
    for name, planner in PLANNERS.items():
        plan = planner(groups, replicas, swap_cost_s=0.0, allow_model_swap=False)
        assert plan.lateness_s == pytest.approx({"late": 0.0, "soon": 2.0}), name


def test_deadline_ties_break_by_key():
    groups = [group("b", 10, deadline_s=1), group("a", 10, deadline_s=1)]
    done = completion_times(groups, [replica("r", 10)], {"a": "r", "b": "r"}, 0.0)
    assert done == pytest.approx({"a": 1.0, "b": 2.0})


@pytest.mark.parametrize("name", PLANNERS)
def test_tight_group_goes_to_the_fast_replica(name):
    groups = [group("tight", 100, deadline_s=2), group("loose", 100, deadline_s=100)]
    replicas = [replica("slow", tokens_per_s=10), replica("fast", tokens_per_s=100)]
    plan = PLANNERS[name](groups, replicas, swap_cost_s=0.0, allow_model_swap=False)
    assert plan.assignment["tight"] == "fast"
    assert plan.objective == 0.0


@pytest.mark.parametrize("name", ["milp", "brute_force"])
@pytest.mark.parametrize(("swap_cost_s", "expected"), [(1.0, "b1"), (50.0, "a1")])
def test_model_swap_only_when_it_pays(name, swap_cost_s, expected):
    groups = [group("g", 100, deadline_s=5, model="a")]
    replicas = [replica("a1", 100, backlog_s=30, model="a"), replica("b1", 100, model="b")]
    # On a1: 30 + 1 = 31 s, 26 s late. On b1: 1 + swap; cheap: on time, objective = swap = 1;
    # expensive: 51 s, 46 s late, objective 46 + 50 = 96 > 26.
    plan = PLANNERS[name](groups, replicas, swap_cost_s=swap_cost_s, allow_model_swap=True)
    assert plan.assignment == {"g": expected}
    assert plan.objective == pytest.approx(1.0 if expected == "b1" else 26.0)
    assert plan.status == "optimal"


@pytest.mark.parametrize("name", PLANNERS)
def test_without_model_swap_never_crosses_models(name):
    groups = [group("ga", 500, deadline_s=1, model="a"), group("gb", 1, deadline_s=100, model="b"),
              group("gc", 10, deadline_s=1, model="c")]
    replicas = [replica("a1", 10, backlog_s=60, model="a"), replica("b1", 1000, model="b")]
    plan = PLANNERS[name](groups, replicas, swap_cost_s=0.0, allow_model_swap=False)
    assert plan.assignment == {"ga": "a1", "gb": "b1"}  # "gc" has no replica: left out
    assert_consistent(plan, groups, replicas, 0.0, allow_model_swap=False)


@pytest.mark.parametrize("name", PLANNERS)
def test_empty_inputs(name):
    kw = {"swap_cost_s": 1.0, "allow_model_swap": False}
    assert PLANNERS[name]([], [replica("r", 10)], **kw).status == "empty"
    plan = PLANNERS[name]([group("g", 10, 1)], [], **kw)
    assert (plan.status, plan.assignment, plan.objective) == ("empty", {}, 0.0)
    plan = PLANNERS[name]([group("g", 10, 1, model="x")], [replica("r", 10)], **kw)
    assert plan.status == "empty"


def random_instance(rng: random.Random, max_groups: int = 4, max_replicas: int = 3
                    ) -> tuple[list[PlanGroup], list[PlanReplica], float, bool]:
    models = ["a", "b", "c"][:rng.randint(1, 3)]
    groups = [PlanGroup(key=f"g{i}", model=rng.choice(models), num_requests=rng.randint(1, 5),
                        work_tokens=rng.choice([0.0, rng.uniform(0, 2000)]),
                        deadline_s=rng.uniform(-10, 40))
              for i in range(rng.randint(1, max_groups))]
    replicas = [PlanReplica(replica_id=f"r{j}", model=rng.choice(models),
                            tokens_per_s=rng.uniform(20, 200),
                            backlog_s=rng.choice([0.0, rng.uniform(0, 20)]))
                for j in range(rng.randint(1, max_replicas))]
    return groups, replicas, rng.choice([0.0, rng.uniform(0, 15)]), rng.random() < 0.6


def test_milp_matches_brute_force_and_greedy_is_never_better():
    rng = random.Random(20240701)
    statuses = set()
    for _ in range(200):
        groups, replicas, swap_cost_s, allow = random_instance(rng)
        kw = {"swap_cost_s": swap_cost_s, "allow_model_swap": allow}
        exact = plan_brute_force(groups, replicas, **kw)
        solved = plan_milp(groups, replicas, time_limit_s=5.0, **kw)
        greedy = plan_greedy(groups, replicas, **kw)
        statuses.add(solved.status)
        assert solved.status in ("optimal", "empty")
        assert math.isclose(solved.objective, exact.objective, rel_tol=1e-6, abs_tol=1e-9), (
            groups, replicas, kw, solved, exact)
        assert greedy.objective >= exact.objective - 1e-9
        for plan in (exact, solved, greedy):
            assert_consistent(plan, groups, replicas, swap_cost_s, allow)
    assert statuses == {"optimal", "empty"}


def test_time_limit_is_honoured_on_a_larger_instance():
    rng = random.Random(7)
    groups = [PlanGroup(key=f"g{i:02d}", model=rng.choice("abc"), num_requests=rng.randint(1, 20),
                        work_tokens=rng.uniform(100, 5000), deadline_s=rng.uniform(-5, 30))
              for i in range(12)]
    replicas = [PlanReplica(replica_id=f"r{j}", model=rng.choice("abc"),
                            tokens_per_s=rng.uniform(50, 500), backlog_s=rng.uniform(0, 10))
                for j in range(6)]
    started = time.perf_counter()
    plan = plan_milp(groups, replicas, swap_cost_s=2.0, allow_model_swap=True, time_limit_s=0.05)
    assert time.perf_counter() - started < 1.0
    assert plan.status in ("optimal", "time_limit", "greedy")
    assert_consistent(plan, groups, replicas, 2.0, allow_model_swap=True)
    greedy = plan_greedy(groups, replicas, swap_cost_s=2.0, allow_model_swap=True)
    assert plan.objective <= greedy.objective + 1e-9


@pytest.mark.parametrize(("build", "field"), [
    (lambda: replica("r", tokens_per_s=0), "tokens_per_s"),
    (lambda: replica("r", tokens_per_s=-1), "tokens_per_s"),
    (lambda: replica("r", tokens_per_s=math.nan), "tokens_per_s"),
    (lambda: replica("r", 10, backlog_s=-1), "backlog_s"),
    (lambda: group("g", work_tokens=-1, deadline_s=1), "work_tokens"),
    (lambda: group("g", 10, deadline_s=math.inf), "deadline_s"),
    (lambda: group("g", 10, 1, num_requests=0), "num_requests"),
])
def test_bad_fields_raise_naming_the_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


@pytest.mark.parametrize("name", PLANNERS)
def test_bad_collections_raise_naming_the_field(name):
    planner = PLANNERS[name]
    kw = {"swap_cost_s": 0.0, "allow_model_swap": True}
    with pytest.raises(ValueError, match="key"):
        planner([group("g", 1, 1), group("g", 2, 2)], [replica("r", 10)], **kw)
    with pytest.raises(ValueError, match="replica_id"):
        planner([group("g", 1, 1)], [replica("r", 10), replica("r", 20)], **kw)
    with pytest.raises(ValueError, match="swap_cost_s"):
        planner([group("g", 1, 1)], [replica("r", 10)], swap_cost_s=-1.0, allow_model_swap=True)


def test_bad_time_limit_and_unknown_assignment_names():
    with pytest.raises(ValueError, match="time_limit_s"):
        plan_milp([group("g", 1, 1)], [replica("r", 10)], swap_cost_s=0.0,
                  allow_model_swap=True, time_limit_s=0.0)
    with pytest.raises(ValueError, match="replica_id"):
        completion_times([group("g", 1, 1)], [replica("r", 10)], {"g": "nope"}, 0.0)
    with pytest.raises(ValueError, match="key"):
        objective([group("g", 1, 1)], [replica("r", 10)], {"x": "r"}, 0.0)
