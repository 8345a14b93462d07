"""Placement: which replica, among those with room, gets the next request."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from orchestrator.dispatcher import ReplicaState
    from orchestrator.queue_policy import QueuedRequest


class PlacementPolicy(ABC):
    name: ClassVar[str]

    @abstractmethod
    def choose(self, request: QueuedRequest, candidates: Sequence[ReplicaState],
               now_s: float) -> ReplicaState:
        """Pick one of ``candidates`` (non-empty, all with room, all serving the model)."""


class LeastLoadedPlacement(PlacementPolicy):
    """Lowest fraction of room in use; ties go to the replica that measured more output
    tokens per second (a faster GPU class), then to the replica id for determinism."""

    name = "least-loaded"

    def choose(self, request: QueuedRequest, candidates: Sequence[ReplicaState],
               now_s: float) -> ReplicaState:
        return min(candidates, key=lambda r: (r.load_fraction, -r.stats.output_tokens_per_s,
                                              r.replica_id))


PLACEMENT_POLICIES: dict[str, type[PlacementPolicy]] = {
    p.name: p for p in (LeastLoadedPlacement,)
}


def make_placement_policy(name: str) -> PlacementPolicy:
    try:
        return PLACEMENT_POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown placement policy {name!r}; known: {sorted(PLACEMENT_POLICIES)}") from None
