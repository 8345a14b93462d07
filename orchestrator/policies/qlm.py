"""QLM's re-plan (Patke et al. 2024; ALGORITHMS.md), the one planner dispatch asks.

The ``qlm`` order itself (EDF with late requests behind) is
:class:`orchestrator.policies.order.QlmPolicy`.  When the estimator's pass predicts a
miss, :class:`QlmPlanner` assigns request groups (model, SLO class) to the replicas'
virtual queues by the small MILP of :mod:`orchestrator.policies.qlm_plan` (total lateness, HiGHS
under a time limit).  A replica with room then takes first from the groups planned for
it (EDF among them), and when those are empty the least urgent head of another group
(work conserving, without taking the urgent work the plan gave a faster replica), and
runs what it took itself.  With no predicted miss the plan is cleared: plain EDF.

Every other queue policy dispatches under :class:`NoPlan`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from orchestrator.policies.qlm_plan import PlanGroup, PlanReplica, plan_milp

if TYPE_CHECKING:
    from orchestrator.estimator import PassResult

#: The plan's deadline for a group without one (the MILP needs finite numbers).
NO_DEADLINE_S = 1e7

Group = tuple[str, str]


class Planner(Protocol):
    """What dispatch asks of a plan: which groups a pulling replica takes from first,
    and whether the replica that pulled a request must run it."""

    @property
    def active(self) -> bool: ...

    def split(self, groups: list[Group], replica_id: str) -> tuple[list[Group], list[Group]]:
        """(the groups ``replica_id`` takes from first, the others it may help with)."""
        ...

    def replan(self, view: PassResult, now_s: float) -> dict[str, Any]: ...

    def clear(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...


class NoPlan:
    """No plan: every group is every replica's; placement alone chooses."""

    active = False

    def split(self, groups: list[Group], replica_id: str) -> tuple[list[Group], list[Group]]:
        return groups, []

    def replan(self, view: PassResult, now_s: float) -> dict[str, Any]:
        return {}

    def clear(self) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {}


class QlmPlanner:
    def __init__(self, time_limit_s: float = 0.05) -> None:
        self.time_limit_s = time_limit_s
        #: HiGHS node limit (None: none); the simulator sets it, with a time limit that
        #: never binds, so that a plan depends on its inputs only.
        self.node_limit: int | None = None
        self._plan: dict[Group, str] = {}
        self.last_plan: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        return bool(self._plan)

    def split(self, groups: list[Group], replica_id: str) -> tuple[list[Group], list[Group]]:
        """The groups planned for ``replica_id`` (and those the plan does not know) first;
        the others, from which it takes the least urgent head."""
        if not self._plan:
            return groups, []
        mine = [g for g in groups if self._plan.get(g, replica_id) == replica_id]
        return mine, [g for g in groups if g not in mine]

    def clear(self) -> None:
        self._plan = {}

    def replan(self, view: PassResult, now_s: float) -> dict[str, Any]:
        if view.num_predicted_misses == 0 or not view.groups or not view.replicas:
            self._plan = {}
            return {"replanned": 0}
        groups = [PlanGroup(key=f"{m}/{c}", model=m, num_requests=n, work_tokens=tokens,
                            deadline_s=min(deadline, NO_DEADLINE_S))  # no SLO: never late
                  for (m, c), (n, tokens, deadline) in sorted(view.groups.items())]
        by_key = {f"{m}/{c}": (m, c) for (m, c) in view.groups}
        replicas = [PlanReplica(r.replica_id, r.model, r.speed.tokens_per_s,
                                0.0 if r.has_room else r.speed.slot_free_s())
                    for r in view.replicas]
        # dispatch never loads another model on a replica: a group stays on its model's
        # replicas (the planner's model-swap term is the paper's, unused here)
        plan = plan_milp(groups, replicas, swap_cost_s=0.0, allow_model_swap=False,
                         time_limit_s=self.time_limit_s, node_limit=self.node_limit)
        self._plan = {by_key[k]: rid for k, rid in plan.assignment.items()}
        self.last_plan = {"assignment": dict(plan.assignment), "status": plan.status,
                          "objective": plan.objective, "solve_ms": plan.solve_ms,
                          "predicted_misses": view.num_predicted_misses}
        return {"replanned": 1, **self.last_plan}

    def describe(self) -> dict[str, Any]:
        return {"plan": self.last_plan}
