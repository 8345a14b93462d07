from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("model", "prompt_text", "prompt_token_ids", "prompt_tokens", "api_names", "max_tokens")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    API_NAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt_text: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    prompt_tokens: int
    api_names: _containers.RepeatedScalarFieldContainer[str]
    max_tokens: int
    def __init__(self, model: _Optional[str] = ..., prompt_text: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., prompt_tokens: _Optional[int] = ..., api_names: _Optional[_Iterable[str]] = ..., max_tokens: _Optional[int] = ...) -> None: ...

class PredictBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[PredictRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[PredictRequest, _Mapping]]] = ...) -> None: ...

class ApiDuration(_message.Message):
    __slots__ = ("name", "mean_s", "p90_s", "samples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEAN_S_FIELD_NUMBER: _ClassVar[int]
    P90_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    mean_s: float
    p90_s: float
    samples: int
    def __init__(self, name: _Optional[str] = ..., mean_s: _Optional[float] = ..., p90_s: _Optional[float] = ..., samples: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("output_tokens", "output_tokens_p50", "output_tokens_p90", "bin_probs", "api_durations", "predictor_version", "fallback", "length_model")
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_P50_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_P90_FIELD_NUMBER: _ClassVar[int]
    BIN_PROBS_FIELD_NUMBER: _ClassVar[int]
    API_DURATIONS_FIELD_NUMBER: _ClassVar[int]
    PREDICTOR_VERSION_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    LENGTH_MODEL_FIELD_NUMBER: _ClassVar[int]
    output_tokens: float
    output_tokens_p50: float
    output_tokens_p90: float
    bin_probs: _containers.RepeatedScalarFieldContainer[float]
    api_durations: _containers.RepeatedCompositeFieldContainer[ApiDuration]
    predictor_version: int
    fallback: bool
    length_model: str
    def __init__(self, output_tokens: _Optional[float] = ..., output_tokens_p50: _Optional[float] = ..., output_tokens_p90: _Optional[float] = ..., bin_probs: _Optional[_Iterable[float]] = ..., api_durations: _Optional[_Iterable[_Union[ApiDuration, _Mapping]]] = ..., predictor_version: _Optional[int] = ..., fallback: _Optional[bool] = ..., length_model: _Optional[str] = ...) -> None: ...

class PredictBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[PredictResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[PredictResponse, _Mapping]]] = ...) -> None: ...

class ApiCall(_message.Message):
    __slots__ = ("name", "duration_s")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    name: str
    duration_s: float
    def __init__(self, name: _Optional[str] = ..., duration_s: _Optional[float] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("model", "prompt_text", "prompt_token_ids", "prompt_tokens", "output_tokens_per_turn", "api_calls")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEXT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_PER_TURN_FIELD_NUMBER: _ClassVar[int]
    API_CALLS_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt_text: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    prompt_tokens: int
    output_tokens_per_turn: _containers.RepeatedScalarFieldContainer[int]
    api_calls: _containers.RepeatedCompositeFieldContainer[ApiCall]
    def __init__(self, model: _Optional[str] = ..., prompt_text: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., prompt_tokens: _Optional[int] = ..., output_tokens_per_turn: _Optional[_Iterable[int]] = ..., api_calls: _Optional[_Iterable[_Union[ApiCall, _Mapping]]] = ...) -> None: ...

class ObserveRequest(_message.Message):
    __slots__ = ("observations",)
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    observations: _containers.RepeatedCompositeFieldContainer[Observation]
    def __init__(self, observations: _Optional[_Iterable[_Union[Observation, _Mapping]]] = ...) -> None: ...

class ObserveResponse(_message.Message):
    __slots__ = ("accepted", "rejected")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    rejected: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accepted: _Optional[int] = ..., rejected: _Optional[_Iterable[str]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "version", "history_size", "observations_total")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HISTORY_SIZE_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    history_size: int
    observations_total: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., history_size: _Optional[int] = ..., observations_total: _Optional[int] = ...) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("length_model", "models", "api_durations", "persistence", "redis_connected", "embedding_model", "bins", "bin_width_tokens", "predictions_total", "invalid_total", "observations_total", "refits_total", "redis_errors_total", "corrupt_entries_ignored")
    LENGTH_MODEL_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    API_DURATIONS_FIELD_NUMBER: _ClassVar[int]
    PERSISTENCE_FIELD_NUMBER: _ClassVar[int]
    REDIS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    BIN_WIDTH_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    INVALID_TOTAL_FIELD_NUMBER: _ClassVar[int]
    OBSERVATIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REFITS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REDIS_ERRORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_ENTRIES_IGNORED_FIELD_NUMBER: _ClassVar[int]
    length_model: str
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    api_durations: _containers.RepeatedCompositeFieldContainer[ApiDuration]
    persistence: str
    redis_connected: bool
    embedding_model: str
    bins: int
    bin_width_tokens: int
    predictions_total: int
    invalid_total: int
    observations_total: int
    refits_total: int
    redis_errors_total: int
    corrupt_entries_ignored: int
    def __init__(self, length_model: _Optional[str] = ..., models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., api_durations: _Optional[_Iterable[_Union[ApiDuration, _Mapping]]] = ..., persistence: _Optional[str] = ..., redis_connected: _Optional[bool] = ..., embedding_model: _Optional[str] = ..., bins: _Optional[int] = ..., bin_width_tokens: _Optional[int] = ..., predictions_total: _Optional[int] = ..., invalid_total: _Optional[int] = ..., observations_total: _Optional[int] = ..., refits_total: _Optional[int] = ..., redis_errors_total: _Optional[int] = ..., corrupt_entries_ignored: _Optional[int] = ...) -> None: ...
