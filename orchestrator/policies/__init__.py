"""The global queue's policies, and their registries (config name -> class): the order
of the queue (:mod:`.order`), where a request goes among the replicas with room
(:mod:`.placement`), and the planner dispatch asks first (QLM's plan, :mod:`.qlm`).
The names a config may give are the ``Literal`` types of :mod:`augserve_common.names`;
a test checks that each registry has exactly those keys."""

from __future__ import annotations

from typing import Any

from orchestrator.policies.order import (
    EdfPolicy,
    FifoPolicy,
    PriorityPolicy,
    QlmPolicy,
    QueuePolicy,
)
from orchestrator.policies.placement import (
    EstimatedCompletionPlacement,
    LeastLoadedPlacement,
    PlacementPolicy,
)
from orchestrator.policies.qlm import NoPlan, Planner, QlmPlanner

QUEUE_POLICIES: dict[str, type[QueuePolicy]] = {
    p.name: p for p in (FifoPolicy, PriorityPolicy, EdfPolicy, QlmPolicy)
}
PLACEMENT_POLICIES: dict[str, type[PlacementPolicy]] = {
    p.name: p for p in (LeastLoadedPlacement, EstimatedCompletionPlacement)
}


def make_queue_policy(name: str, **kwargs: Any) -> QueuePolicy:
    if name not in QUEUE_POLICIES:
        raise ValueError(f"unknown queue policy {name!r}; known: {sorted(QUEUE_POLICIES)}")
    return QUEUE_POLICIES[name](**kwargs)


def make_placement_policy(name: str) -> PlacementPolicy:
    if name not in PLACEMENT_POLICIES:
        raise ValueError(
            f"unknown placement policy {name!r}; known: {sorted(PLACEMENT_POLICIES)}")
    return PLACEMENT_POLICIES[name]()


def make_planner(policy: str, time_limit_s: float) -> Planner:
    """The planner of a queue policy: QLM's for ``qlm``, none for the others."""
    return QlmPlanner(time_limit_s) if policy == "qlm" else NoPlan()


__all__ = ["PLACEMENT_POLICIES", "QUEUE_POLICIES", "Planner", "PlacementPolicy", "QueuePolicy",
           "make_placement_policy", "make_planner", "make_queue_policy"]
