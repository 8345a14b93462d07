"""Pydantic configuration of one replica deployment (rejects unknown keys)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from augserve_common.priors import DEFAULT_A_MS_PER_TOKEN, DEFAULT_C_MS
from augserve_common.strict import StrictModel
from replicas.policy.ranking import RERANK_EVERY_STEPS, STARVATION_THRESHOLD_STEPS

DEFAULT_MODEL_NAME = "tiny-llama"


def cache_dir() -> Path:
    """Where built artefacts (the tiny model) live: ``$AUGSERVE_CACHE_DIR`` or
    ``~/.cache/augserve``."""
    return Path(os.environ.get("AUGSERVE_CACHE_DIR", Path.home() / ".cache" / "augserve"))


def default_model_path() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


class EngineConfig(StrictModel):
    """The vLLM engine settings that a replica exposes; anything else goes in ``extra_args``."""

    max_model_len: int | None = Field(
        None, ge=16, description="Context length in tokens; default: the model's own.")
    max_num_seqs: int = Field(8, ge=1, description="Most sequences the engine runs at once.")
    max_num_batched_tokens: int | None = Field(
        None, ge=16, description="Token budget of one engine iteration; default: vLLM's.")
    kv_cache_gib: float = Field(
        1.0, gt=0, description="KV-cache memory in GiB, passed to vLLM as kv_cache_memory_bytes "
        "(on CPU and GPU alike; VLLM_CPU_KVCACHE_SPACE is ignored).")
    block_size: int | None = Field(
        None, ge=16, description="KV block size in tokens (multiple of 32 on CPU); default: vLLM's.")
    enforce_eager: bool = Field(True, description="Skip graph capture (required on CPU).")
    dtype: str = Field("auto", description="Weights/activation dtype passed to vLLM.")
    seed: int = Field(0, description="Engine sampling seed.")
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of shared prefixes.")
    extra_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Further AsyncEngineArgs fields, checked against vLLM's at engine start.")


class RoomConfig(StrictModel):
    """How much work the queue manager may hand this replica (pull-based dispatch)."""

    max_waiting_requests: int = Field(
        4, ge=0, description="Most engine-waiting requests; room = max_num_seqs + this.")


class ProfilingConfig(StrictModel):
    """Timing engine steps at start-up to fit ``t_fwd(x) = a·x + c`` (ALGORITHMS.md)."""

    enabled: bool = Field(True, description="Profile the engine at start (else: the defaults "
                          "below until live steps refine them).")
    batch_token_counts: list[int] = Field(
        default_factory=lambda: [16, 64, 256, 512], min_length=2,
        description="Tokens processed in the timed steps (prefills of these lengths).")
    repeats: int = Field(3, ge=1, le=20, description="Timed steps per token count (median kept).")
    default_a_ms_per_token: float = Field(DEFAULT_A_MS_PER_TOKEN, ge=0, description="a without profiling.")
    default_c_ms: float = Field(DEFAULT_C_MS, ge=0, description="c without profiling.")
    saturation_tokens: int | None = Field(
        None, ge=1, description="S, the tokens one step recomputes; default: the engine's "
        "max_num_batched_tokens (vLLM's prefill chunk).")


class SchedulingConfig(StrictModel):
    """The replica's policy (replicas.policy) and its pause budget."""

    policy: Literal["fcfs", "infercept", "infercept-oracle", "sjf", "lamps", "lamps-oracle"] = Field(
        "fcfs", description="Waiting order and KV handling at API calls (docs/policies.md); "
        "the -oracle ones read the true lengths of benchmark annotations.")
    rerank_every_steps: int = Field(
        RERANK_EVERY_STEPS, ge=1, description="Recompute scores and re-sort the waiting queue every k steps "
        "(new requests are placed by their score at once); 4 keeps LAMPS under 1 ms per step "
        "with 256 waiting (docs/policies.md).")
    starvation_threshold_steps: int | None = Field(
        STARVATION_THRESHOLD_STEPS, ge=1, description="A request passed over this many steps goes to the front "
        "(LAMPS chose 100); null: never.")
    pause_kv_watermark: float = Field(
        0.85, gt=0, le=1, description="KV usage above which preserved (paused) sessions are "
        "demoted to discard, most wasteful first, and no new call is preserved.")
    reserved_slots: int = Field(
        1, ge=1, description="Sequence slots that paused sessions may never take (they hold a "
        "slot each while their API runs).")
    live_profile: bool = Field(True, description="Refresh a and c from the engine's live "
                               "step timings once enough varied steps were seen.")
    budget_check_s: float = Field(0.05, gt=0, le=5, description="Period of the pause-budget check.")
    profiling: ProfilingConfig = Field(default_factory=ProfilingConfig,
                                       description="Start-up profiling of the engine.")


class ReplicaConfig(StrictModel):
    """One replica deployment: one model on one GPU class."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Serve deployment name.")
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1,
                            description="Name clients use in the `model` field.")
    model_path: str | None = Field(
        None, description="Local Hugging Face model directory or a Hugging Face Hub id "
        "(e.g. Qwen/Qwen2.5-7B-Instruct; fetched on first use, HF_TOKEN for gated ones); "
        "default: the built tiny model.")
    gpu_class: str = Field(..., min_length=1,
                           description="Label of the accelerator class (e.g. A100, small).")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    room: RoomConfig = Field(default_factory=RoomConfig, description="Pull-based dispatch limits.")
    stream_interval_ms: float = Field(
        20.0, ge=0, le=1000,
        description="Most time between two streamed messages of one request; tokens that "
        "arrive in between are merged (the first and last go at once). 0 sends every delta.")
    scheduling: SchedulingConfig = Field(default_factory=SchedulingConfig,
                                         description="Replica policy and pause budget.")
    max_tool_rounds: int = Field(8, ge=0, le=64, description="Most rounds of server-side "
                                 "tool calls in one request; the turn after the last ends it.")
    stats_period_s: float = Field(0.5, gt=0, le=10,
                                  description="How often the replica reports to the queue manager.")

    @field_validator("model_path")
    @classmethod
    def _expand(cls, value: str | None) -> str | None:
        return None if value is None else os.path.expanduser(value)

    def resolved_model_path(self) -> Path:
        return Path(self.model_path) if self.model_path else default_model_path()
