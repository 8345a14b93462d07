"""Pydantic configuration of the whole application (the ``args`` of the Serve config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from augserve_common.names import PlacementName, QueuePolicyName
from augserve_common.strict import StrictModel
from orchestrator.store import StoreConfig
from predictor_service.config import PredictorAppConfig
from replicas.config import ReplicaConfig


class SLOClass(StrictModel):
    """A latency target class; requests name it in ``slo``."""

    ttft_ms: int | None = Field(None, ge=1, description="Time-to-first-token target.")
    e2e_ms: int | None = Field(None, ge=1, description="End-to-end latency target.")
    admission: Literal["reject", "best_effort"] = Field(
        "best_effort", description="When the estimator says no replica can meet the target: "
        "reject (429 with Retry-After) or admit it anyway, best effort.")
    expire: bool = Field(
        False, description="A request still queued when its deadline (arrival + ttft_ms, "
        "else + e2e_ms) has passed gets 504 instead of being served late.")


def default_slo_classes() -> dict[str, SLOClass]:
    return {
        "interactive": SLOClass(ttft_ms=2_000, e2e_ms=20_000, admission="reject", expire=True),
        "standard": SLOClass(ttft_ms=10_000, e2e_ms=120_000),
        "batch": SLOClass(ttft_ms=None, e2e_ms=3_600_000),
    }


class DurabilityConfig(StoreConfig):
    """Where the queue manager keeps accepted requests (docs/queue.md, "Durability"): the store's
    settings (``redis_url`` None: in memory only, a restarted queue manager starts empty)
    plus the durability mode and the re-attach grace."""

    mode: Literal["required", "best_effort"] = Field(
        "best_effort", description="required: a request is acknowledged only once Redis has "
        "it (no Redis: 503 for new requests); best_effort: without Redis it is kept in "
        "memory, with a warning and a metric, and written once Redis is back.")
    reattach_grace_s: float = Field(
        30.0, gt=0, description="After a restart, how long a recovered queued request waits "
        "for its caller to re-attach before it is dropped as abandoned.")

    @model_validator(mode="after")
    def _redis_when_required(self) -> DurabilityConfig:
        if self.mode == "required" and not (self.redis_url or self.redis_url_env):
            raise ValueError("durability mode 'required' needs redis_url or redis_url_env")
        return self

    def store_config(self, environ: Mapping[str, str] | None = None) -> StoreConfig:
        """The store's settings, ``redis_url`` read from ``redis_url_env`` if that is set."""
        fields = self.model_dump(include=set(StoreConfig.model_fields))
        return StoreConfig.model_validate(fields).resolved(environ)


class EvictionConfig(StrictModel):
    """Taking back requests a replica has not started (QLM's request eviction)."""

    enabled: bool = Field(True, description="Evict when a request would miss its deadline "
                          "where it waits and another replica can make it.")
    overhead_s: float = Field(0.2, ge=0, description="Cost of moving a request (abort, "
                              "re-queue, new prefill) counted against the other replica.")


class QueueConfig(StrictModel):
    """The global queue manager."""

    policy: QueuePolicyName = Field("fifo", description="Ordering policy by name.")
    placement: PlacementName = Field("least-loaded", description="Placement policy by name.")
    default_slo_class: str | None = Field(
        "standard", description="SLO class of requests that name none (None: no SLO, "
        "an infinite deadline).")
    explicit_slo_admission: Literal["reject", "best_effort"] = Field(
        "best_effort", description="Admission rule of requests with explicit slo targets.")
    replan_period_s: float = Field(0.5, gt=0, description="Period of the estimator's pass "
                                   "over the queue (virtual queues; QLM re-plans then).")
    plan_time_limit_s: float = Field(0.05, gt=0, le=10, description="Time limit of QLM's MILP.")
    estimator_z: float = Field(1.0, ge=0, description="Tail margin of the waiting-time "
                               "estimate, in standard deviations of the tokens ahead.")
    max_kv_usage: float = Field(0.95, gt=0, le=1, description="Pull: a replica whose KV usage "
                                "is at or above this takes no new work.")
    eviction: EvictionConfig = Field(default_factory=EvictionConfig, description="Eviction.")
    durability: DurabilityConfig = Field(default_factory=DurabilityConfig,
                                         description="Redis durability of the queue.")
    max_queued: int = Field(1024, ge=1, description="Queued requests beyond which new ones get 429.")
    queue_timeout_s: float = Field(600.0, gt=0, description="Longest wait in the queue before 503.")
    replica_timeout_s: float = Field(
        5.0, gt=0, description="A replica silent for this long is considered gone.")
    lost_grace_s: float = Field(
        10.0, gt=0, description="A request in flight that its replica has not reported as "
        "active for this long is released (its completion notice was lost).")
    retry_after_min_s: float = Field(1.0, gt=0, description="Smallest Retry-After given.")
    retry_after_max_s: float = Field(60.0, gt=0, description="Largest Retry-After given.")
    tick_s: float = Field(0.1, gt=0, le=5, description="Period of expiry and health checks.")


class IngressConfig(StrictModel):
    """The OpenAI-compatible HTTP front end."""

    max_body_bytes: int = Field(1 << 20, ge=1024, description="Larger request bodies get 413.")
    default_completion_max_tokens: int = Field(
        16, ge=1, description="max_tokens of /v1/completions when the client gives none.")
    max_stop_sequences: int = Field(8, ge=0, description="Most stop strings per request.")


class BenchDefaults(StrictModel):
    """What ``augserve bench compare`` replays against this config when its command line
    does not say (the server itself ignores this block)."""

    time_scale: float = Field(1.0, gt=0, description="Multiplies API durations and gaps.")
    rates: list[float] = Field(default_factory=lambda: [1.0, 2.0, 4.0], min_length=1,
                               description="Arrival rates (req/s of trace time) to replay.")
    limit: int | None = Field(None, ge=1, description="Requests drawn from the workload.")
    arrival: Literal["poisson", "gamma", "bursty"] | None = Field(
        None, description="Arrival process of requests without arrival times (None: poisson).")
    cv: float | None = Field(
        None, gt=0, description="Gamma arrivals: coefficient of variation of the gaps (None: 2).")
    burst_factor: float | None = Field(
        None, ge=1, description="Bursty arrivals: rate multiplier inside a burst (None: 4).")
    burst_period_s: float | None = Field(
        None, gt=0, description="Bursty arrivals: a burst starts every this many seconds of "
        "trace time (None: 60).")
    burst_duty: float | None = Field(
        None, gt=0, le=1, description="Bursty arrivals: fraction of each period in the burst "
        "(None: 0.25); the mean rate is rate × (1 + duty × (factor − 1)).")
    slo_shares: dict[str, float] | None = Field(
        None, description="Share of requests per SLO class, e.g. {interactive: 0.2, batch: 0.8} "
        "(None: interactive 0.2, standard 0.5, batch 0.3); the classes must exist on the server.")

    @field_validator("slo_shares")
    @classmethod
    def _shares(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and (any(v < 0 for v in value.values()) or sum(value.values()) <= 0):
            raise ValueError(f"SLO shares must be ≥ 0 and sum to more than 0: {value}")
        return value


class AppConfig(StrictModel):
    """Everything the application builder needs."""

    replicas: list[ReplicaConfig] = Field(..., min_length=1, description="Replica deployments.")
    queue: QueueConfig = Field(default_factory=QueueConfig, description="The global queue manager.")
    ingress: IngressConfig = Field(default_factory=IngressConfig, description="The HTTP front end.")
    slo_classes: dict[str, SLOClass] = Field(default_factory=default_slo_classes,
                                             description="Named SLO classes.")
    predictor: PredictorAppConfig = Field(default_factory=PredictorAppConfig,
                                          description="Output-length and API-duration predictor.")
    bench: BenchDefaults | None = Field(
        None, description="Defaults of the benchmark compare runner for this config.")
    tools: dict[str, Any] = Field(
        default_factory=dict,
        description="Server-side tools by name (replicas.tools: kind http or emulated). When "
        "any is registered, every tool a chat request offers must be one of them (else 400 "
        "unknown_tool); augmentation APIs with a registered name run through it.")

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: dict[str, Any]) -> dict[str, Any]:
        from replicas.tools import parse_tools
        parse_tools(value)  # raises on a bad tool definition
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AppConfig:
        names = [r.name for r in self.replicas]
        if len(set(names)) != len(names):
            raise ValueError(f"replica deployment names must be unique: {names}")
        reserved = {"Ingress", "QueueManager", "Predictor"} & set(names)
        if reserved:
            raise ValueError(f"replica deployment names {sorted(reserved)} are taken by the "
                             "application's own deployments")
        default = self.queue.default_slo_class
        if default is not None and default not in self.slo_classes:
            raise ValueError(f"queue.default_slo_class {default!r} is not one of the SLO "
                             f"classes {sorted(self.slo_classes)}")
        paths: dict[str, str] = {}
        for r in self.replicas:
            path = str(r.resolved_model_path())
            if paths.setdefault(r.model_name, path) != path:
                raise ValueError(f"model {r.model_name!r} has two different model_path values")
        return self

    def hosts_predictor(self) -> bool:
        """The app runs its own Predictor deployment (enabled, no external address)."""
        return self.predictor.enabled and self.predictor.client.address is None

    def deployment_names(self) -> set[str]:
        """The deployments the application builder creates (a Serve config may tune only these)."""
        return ({"Ingress", "QueueManager"} | {r.name for r in self.replicas}
                | ({"Predictor"} if self.hosts_predictor() else set()))

    def models(self) -> dict[str, list[ReplicaConfig]]:
        out: dict[str, list[ReplicaConfig]] = {}
        for r in self.replicas:
            out.setdefault(r.model_name, []).append(r)
        return out
