"""Pydantic configuration of the predictor server and of its client."""

from __future__ import annotations

from pydantic import Field

from augserve_common.names import LengthModelName
from augserve_common.priors import DEFAULT_API_P90_S, DEFAULT_API_S, FALLBACK_OUTPUT_TOKENS
from augserve_common.redis_url import RedisUrlSource
from augserve_common.strict import StrictModel


class PredictorConfig(StrictModel, RedisUrlSource):
    """The predictor server (standalone or hosted in the Serve application)."""

    length_model: LengthModelName = Field(
        "auto", description="Length model by name (embedding-knn, hashed-linear, classifier); "
        "auto = embedding-knn when the embedding package is installed, else hashed-linear.")
    host: str = Field("0.0.0.0", description="Interface the gRPC server listens on.")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    redis_url: str | None = Field(
        None, description="Redis for history, fitted state and duration statistics; "
        "None keeps state in memory only.")
    key_prefix: str = Field("augserve:predictor", min_length=1,
                            description="Prefix of every Redis key the predictor writes.")
    redis_retry_s: float = Field(5.0, gt=0, description="Period of reconnection attempts.")
    models: list[str] = Field(
        default_factory=list, description="Served model names accepted; empty accepts any "
        "name (up to max_models, learned separately).")
    max_models: int = Field(16, ge=1, description="Most distinct model names learned.")
    history_size: int = Field(4096, ge=16, description="Observations kept per model.")
    min_history: int = Field(8, ge=1, description="Observations before the first fit; "
                             "until then predictions are the prior, flagged fallback.")
    refit_every: int = Field(32, ge=1, description="Refit after this many new observations.")
    refit_interval_s: float = Field(
        2.0, gt=0, description="...or when this long has passed since the last refit and "
        "there are new observations.")
    prior_output_tokens_p50: float = Field(FALLBACK_OUTPUT_TOKENS, gt=0, description="Prior median length.")
    prior_output_tokens_p90: float = Field(512.0, gt=0, description="Prior p90 length.")
    max_api_names: int = Field(32, ge=0, description="Most API names in one prediction.")
    max_prompt_chars: int = Field(
        16_000, ge=64, description="Longer prompts are cut to their first and last halves "
        "of this many characters before features or embeddings are computed.")
    max_prompt_tokens: int = Field(1_048_576, ge=1, description="Larger prompt_tokens are "
                                   "INVALID_ARGUMENT.")
    max_batch: int = Field(64, ge=1, description="Most queries evaluated together.")
    max_observations_per_call: int = Field(1024, ge=1, description="Larger Observe calls "
                                           "are INVALID_ARGUMENT.")
    knn_k: int = Field(16, ge=1, description="embedding-knn: neighbours used.")
    knn_min_similarity: float = Field(
        0.6, ge=-1, le=1, description="embedding-knn: below this best cosine similarity the "
        "regression fallback answers.")
    knn_temperature: float = Field(0.05, gt=0, description="embedding-knn: softmax "
                                   "temperature of neighbour weights over similarity.")
    embed_max_tokens: int = Field(
        16, ge=8, le=512, description="Tokens at the END of the prompt that the sentence "
        "embedding sees (about 4 characters each): the latest instruction. 16 was best of "
        "16-256 on the trace (docs/predictor.md).")
    embed_cache_size: int = Field(8192, ge=0, description="Embeddings of recent texts kept.")
    classifier_checkpoint: str | None = Field(
        None, description="classifier: checkpoint (.npz) from `augserve predictor "
        "train-classifier`; without one it learns from observations only.")
    duration_prior_mean_s: float = Field(DEFAULT_API_S, ge=0, description="API duration prior mean.")
    duration_prior_p90_s: float = Field(DEFAULT_API_P90_S, ge=0, description="API duration prior p90.")
    duration_prior_weight: float = Field(2.0, ge=0, description="Pseudo-observations of "
                                         "the duration prior.")
    max_api_names_tracked: int = Field(1024, ge=1, description="Most API names with "
                                       "their own duration statistics.")
    grace_s: float = Field(5.0, ge=0, description="Graceful shutdown: time for calls in "
                           "flight to finish.")


class ClientConfig(StrictModel):
    """How the ingress and replicas call the predictor."""

    address: str | None = Field(
        None, description="host:port of an external predictor; None hosts one in the app.")
    deadline_ms: float = Field(20.0, gt=0, description="Longest wait for one prediction.")
    failure_threshold: int = Field(5, ge=1, description="Consecutive failures that open "
                                   "the circuit.")
    open_s: float = Field(5.0, gt=0, description="Time the circuit stays open before a probe.")
    observe_batch: int = Field(64, ge=1, description="Observations sent per Observe call.")
    observe_interval_s: float = Field(1.0, gt=0, description="Period of observation sends.")
    max_pending_observations: int = Field(4096, ge=1, description="Observations buffered "
                                          "while the predictor is away (oldest dropped).")
    max_prompt_chars: int = Field(
        16_000, ge=64, description="Prompt text sent is cut to its first and last halves of "
        "this many characters (the server's own cut); at most as many token ids are sent.")
    fallback_output_tokens: float = Field(FALLBACK_OUTPUT_TOKENS, gt=0, description="Fallback point/p50 length.")
    fallback_output_tokens_p90: float = Field(512.0, gt=0, description="Fallback p90 length.")
    fallback_api_duration_s: float = Field(DEFAULT_API_S, ge=0, description="Fallback API duration mean.")
    fallback_api_duration_p90_s: float = Field(DEFAULT_API_P90_S, ge=0, description="Fallback API p90.")


class PredictorAppConfig(StrictModel):
    """The predictor inside the Serve application."""

    enabled: bool = Field(True, description="Predict every request (off: no predictor).")
    server: PredictorConfig = Field(default_factory=PredictorConfig,
                                    description="The hosted predictor server.")
    client: ClientConfig = Field(default_factory=ClientConfig, description="Its callers.")
