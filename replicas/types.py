"""Public request, delta and stats types that cross from the ingress and the queue manager
to a replica.  Plain dataclasses: cheap to pickle across Ray processes, no Ray/vLLM import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from predictor_service.types import Prediction


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """Engine-neutral sampling settings, already validated by the ingress."""

    max_tokens: int
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logit_bias: dict[int, float] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    skip_special_tokens: bool = True


@dataclass(frozen=True, slots=True)
class SLOSpec:
    """A latency target: a named class, explicit targets, or both (class resolved to targets)."""

    class_name: str | None = None
    ttft_ms: int | None = None
    e2e_ms: int | None = None


@dataclass(frozen=True, slots=True)
class AugTurn:
    """One turn of an augmented request: generate exactly ``generate_tokens``, then (if
    ``api_name``) call an API that takes ``api_duration_s`` and returns ``api_tokens``."""

    generate_tokens: int
    api_name: str | None = None
    api_duration_s: float = 0.0
    api_tokens: int = 0


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """What every part knows of one request, stamped once by the ingress and shared by its
    two views: the queue's :class:`~orchestrator.queued.QueuedRequest` (sizes, no tokens)
    and the replica's :class:`ReplicaRequest` (tokens and sampling)."""

    request_id: str
    model: str
    priority: int = 0
    slo: SLOSpec | None = None
    session_id: str | None = None
    #: Wall-clock time (unix s) the ingress received it; deadlines count from here, so
    #: they survive re-queueing and a restart of the queue manager (None: not stamped
    #: yet; the queue manager stamps it at admission).
    arrival_s: float | None = None
    #: The predictor's estimate at arrival (None when the predictor is disabled).
    prediction: Prediction | None = None


class HeaderFields:
    """The header's fields, read through by both views of a request (one stamp, one
    place).  A mixin without slots of its own: the views are slotted dataclasses."""

    __slots__ = ()
    header: RequestHeader

    @property
    def request_id(self) -> str:
        return self.header.request_id

    @property
    def model(self) -> str:
        return self.header.model

    @property
    def priority(self) -> int:
        return self.header.priority

    @property
    def slo(self) -> SLOSpec | None:
        return self.header.slo

    @property
    def session_id(self) -> str | None:
        return self.header.session_id

    @property
    def arrival_s(self) -> float | None:
        return self.header.arrival_s

    @property
    def prediction(self) -> Prediction | None:
        return self.header.prediction


@dataclass(frozen=True, slots=True)
class ReplicaRequest(HeaderFields):
    """One generation as the replica sees it: the request's header, tokens in, token
    deltas out."""

    header: RequestHeader
    prompt_token_ids: list[int]
    sampling: SamplingSpec
    augmentation: tuple[AugTurn, ...] | None = None
    #: Registered server-side tools the request offers: the replica stops a turn on
    #: ``</tool_call>``, runs the parsed calls and resumes (empty: no server-side tools).
    tool_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpeedProfile:
    """The step line a replica's policies believe, ``t = a·x + c`` ms (measured at start,
    refined live); the queue manager derives its first speed estimate from it."""

    a_ms_per_token: float
    c_ms: float


@dataclass(slots=True)
class TokenDelta:
    """New tokens of one request since the previous delta."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    #: Augmented requests: the turn these tokens belong to, and events (an API call
    #: starting: ``{"api_call": {...}}``; the last delta: ``{"turns": [timings]}``).
    turn: int = 0
    info: dict[str, Any] | None = None
    #: The replica that produced it (its own id; set on each replica's first delta), so
    #: that a caller can check the request ran where the queue manager put it.
    served_by: str | None = None


class RequestEvictedError(Exception):
    """The queue manager took this request back before it started (it is re-queued)."""

    def __init__(self, request_id: str, replica_id: str) -> None:
        super().__init__(f"request {request_id} evicted from replica {replica_id}")
        self.request_id = request_id
        self.replica_id = replica_id

    def __reduce__(self):
        return (RequestEvictedError, (self.request_id, self.replica_id))


@dataclass(frozen=True, slots=True)
class ReplicaLimits:
    """How much a replica accepts from the queue manager (its "room")."""

    max_num_seqs: int
    max_waiting_requests: int

    @property
    def max_in_flight(self) -> int:
        return self.max_num_seqs + self.max_waiting_requests


@dataclass(slots=True)
class ReplicaStats:
    """A replica's state, pushed to the queue manager and returned by ``stats()``."""

    replica_id: str
    deployment: str
    gpu_class: str
    model: str
    limits: ReplicaLimits
    num_running: int = 0
    num_waiting: int = 0
    num_active_calls: int = 0
    #: Requests of this replica waiting on an API call (they hold no engine slot).
    num_paused: int = 0
    #: Ids of the requests this replica is serving now (the queue manager reconciles).
    active_request_ids: tuple[str, ...] = ()
    #: Of those, the ones without a first token yet (the queue manager may evict them).
    unstarted_request_ids: tuple[str, ...] = ()
    kv_usage: float = 0.0
    output_tokens_per_s: float = 0.0
    num_output_tokens_total: int = 0
    engine_alive: bool = True
    reported_at_s: float = 0.0
    #: host:port of the predictor this replica found (None: none configured or not yet).
    predictor_address: str | None = None
    speed_profile: SpeedProfile | None = None
    #: Counters for display (metrics, the admin endpoint); nothing decides on them.
    extra: dict[str, float] = field(default_factory=dict)
