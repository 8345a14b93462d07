"""Placement: which replica, among those with room, gets the next request."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from orchestrator.fleet import ReplicaState
    from orchestrator.queued import QueuedRequest


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


class EstimatedCompletionPlacement(PlacementPolicy):
    """The replica where the request is estimated to finish first: its prefill and
    decode at the replica's measured speed next to what it already runs (QLM's load
    balancing; a faster GPU class gets more).  Ties: replica id."""

    name = "estimated-completion"

    def choose(self, request: QueuedRequest, candidates: Sequence[ReplicaState],
               now_s: float) -> ReplicaState:
        tokens = max(request.predicted_tokens, 1.0)
        return min(candidates, key=lambda r: (
            r.speed.finish_s(request.num_prompt_tokens, tokens, r.num_busy_seqs), r.replica_id))
