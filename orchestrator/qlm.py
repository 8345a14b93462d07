"""The ``qlm`` queue policy (QLM, Patke et al. 2024; ALGORITHMS.md): earliest deadline
first, plus two things EDF lacks under overload.

- Requests the estimator's last pass found **late** (they miss their deadline even if
  served next) are ordered behind those that can still make it, so that one hopeless
  request does not make the ones behind it miss too.
- When the pass predicts a miss, a **re-plan** assigns request groups (model, SLO class)
  to the replicas' virtual queues by the small MILP of :mod:`orchestrator.qlm_plan`
  (total lateness plus model-swap cost, HiGHS under a time limit).  A replica with room
  then takes first from the groups planned for it (EDF among them), and when those are
  empty the least urgent head of another group (work conserving, without taking the
  urgent work the plan gave a faster replica), and runs what it took itself.  With no predicted miss the plan is cleared: plain EDF.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrator.qlm_plan import PlanGroup, PlanReplica, plan_milp
from orchestrator.queue_policy import EdfPolicy, QueuedRequest

if TYPE_CHECKING:
    from orchestrator.estimator import PassResult

#: The plan's deadline for a group without one (the MILP needs finite numbers).
NO_DEADLINE_S = 1e7


class QlmPolicy(EdfPolicy):
    name = "qlm"
    uses_late = True

    def __init__(self, time_limit_s: float = 0.05) -> None:
        super().__init__()
        self.time_limit_s = time_limit_s
        #: HiGHS node limit (None: none); the simulator sets it, with a time limit that
        #: never binds, so that a plan depends on its inputs only.
        self.node_limit: int | None = None
        self._plan: dict[tuple[str, str], str] = {}
        self.last_plan: dict[str, Any] = {}

    def key(self, request: QueuedRequest) -> tuple:
        return (request.late, request.deadline_s, request.priority, request.arrival_s or 0.0,
                request.seq)

    def pop_next(self, model: str, replica_id: str | None, now_s: float) -> QueuedRequest | None:
        """EDF among the groups planned for ``replica_id`` (and groups the plan does not
        know); when those are empty, the least urgent head of the others (a replica that
        helps out takes what the plan can best afford to move)."""
        groups = self._groups_for(model, replica_id)
        if replica_id is None or not self._plan:
            return self._take(groups)
        mine = [g for g in groups if self._plan.get(g, replica_id) == replica_id]
        return self._take(mine) or self._take([g for g in groups if g not in mine], latest=True)

    def pulls_to_puller(self) -> bool:
        return bool(self._plan)

    def clear_plan(self) -> None:
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
