"""Pydantic configuration of one replica deployment (rejects unknown keys)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MODEL_NAME = "tiny-llama"


def cache_dir() -> Path:
    """Where built artefacts (the tiny model) live: ``$AUGSERVE_CACHE_DIR`` or
    ``~/.cache/augserve``."""
    return Path(os.environ.get("AUGSERVE_CACHE_DIR", Path.home() / ".cache" / "augserve"))


def default_model_path() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(StrictModel):
    """The vLLM engine settings that a replica exposes; anything else goes in ``extra_args``."""

    max_model_len: int | None = Field(
        None, ge=16, description="Context length in tokens; default: the model's own.")
    max_num_seqs: int = Field(8, ge=1, description="Most sequences the engine runs at once.")
    max_num_batched_tokens: int | None = Field(
        None, ge=16, description="Token budget of one engine iteration; default: vLLM's.")
    kv_cache_gib: float = Field(
        1.0, gt=0, description="KV-cache memory in GiB (CPU: VLLM_CPU_KVCACHE_SPACE of the "
        "engine process; GPU: kv_cache_memory_bytes).")
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


class ReplicaConfig(StrictModel):
    """One replica deployment: one model on one GPU class."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Serve deployment name.")
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1,
                            description="Name clients use in the `model` field.")
    model_path: str | None = Field(
        None, description="Local Hugging Face model directory; default: the built tiny model.")
    gpu_class: str = Field(..., min_length=1,
                           description="Label of the accelerator class (e.g. A100, small).")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    room: RoomConfig = Field(default_factory=RoomConfig, description="Pull-based dispatch limits.")
    stream_interval_ms: float = Field(
        20.0, ge=0, le=1000,
        description="Most time between two streamed messages of one request; tokens that "
        "arrive in between are merged (the first and last go at once). 0 sends every delta.")
    stats_period_s: float = Field(0.5, gt=0, le=10,
                                  description="How often the replica reports to the queue manager.")

    @field_validator("model_path")
    @classmethod
    def _expand(cls, value: str | None) -> str | None:
        return None if value is None else os.path.expanduser(value)

    def resolved_model_path(self) -> Path:
        return Path(self.model_path) if self.model_path else default_model_path()
