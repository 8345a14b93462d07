"""Pydantic configuration of the whole application (the ``args`` of the Serve config)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from predictor_service.config import PredictorAppConfig
from replicas.config import ReplicaConfig


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLOClass(StrictModel):
    """A latency target class; requests name it in ``slo``."""

    ttft_ms: int | None = Field(None, ge=1, description="Time-to-first-token target.")
    e2e_ms: int | None = Field(None, ge=1, description="End-to-end latency target.")


def default_slo_classes() -> dict[str, SLOClass]:
    return {
        "interactive": SLOClass(ttft_ms=2_000, e2e_ms=20_000),
        "standard": SLOClass(ttft_ms=10_000, e2e_ms=120_000),
        "batch": SLOClass(ttft_ms=None, e2e_ms=3_600_000),
    }


class QueueConfig(StrictModel):
    """The global queue manager."""

    policy: str = Field("fifo", description="Ordering policy by name (fifo, priority).")
    placement: str = Field("least-loaded", description="Placement policy by name.")
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

    @field_validator("policy", "placement")
    @classmethod
    def _registered(cls, value: str, info) -> str:
        from orchestrator.placement import PLACEMENT_POLICIES
        from orchestrator.queue_policy import QUEUE_POLICIES
        registry = QUEUE_POLICIES if info.field_name == "policy" else PLACEMENT_POLICIES
        if value not in registry:
            raise ValueError(f"unknown {info.field_name} {value!r}; known: {sorted(registry)}")
        return value


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
