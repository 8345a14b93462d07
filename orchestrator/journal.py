"""What the dispatcher tells the durable store, as small typed events: the queue service
drains :attr:`Dispatcher.journal` into the store after every call (the simulator, which
has no store, drops them)."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.outcomes import Outcome


@dataclass(frozen=True, slots=True)
class Dispatched:
    request_id: str
    replica_id: str
    deployment: str
    gpu_class: str


@dataclass(frozen=True, slots=True)
class Finished:
    request_id: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Requeued:
    request_id: str


JournalEvent = Dispatched | Finished | Requeued
