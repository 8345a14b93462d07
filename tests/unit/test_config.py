import pytest
from pydantic import ValidationError

from orchestrator.config import (
    AppConfig,
    BenchDefaults,
    DurabilityConfig,
    EvictionConfig,
    QueueConfig,
    SLOClass,
)
from orchestrator.store import StoreConfig
from predictor_service.config import ClientConfig, PredictorAppConfig, PredictorConfig
from replicas.config import (
    EngineConfig,
    ProfilingConfig,
    ReplicaConfig,
    SchedulingConfig,
)
from replicas.tools import EmulatedToolConfig, HttpToolConfig

REPLICA = {"name": "r1", "gpu_class": "large"}


def test_defaults_and_models():
    cfg = AppConfig.model_validate({"replicas": [REPLICA, {**REPLICA, "name": "r2", "gpu_class": "small"}]})
    assert cfg.queue.policy == "fifo" and set(cfg.slo_classes) == {"interactive", "standard", "batch"}
    assert list(cfg.models()) == ["tiny-llama"] and len(cfg.models()["tiny-llama"]) == 2


@pytest.mark.parametrize("bad", [
    {"replicas": [REPLICA], "unknown": 1},
    {"replicas": [{**REPLICA, "engine": {"max_num_seqs": 0}}]},
    {"replicas": [{**REPLICA, "engine": {"typo_key": 1}}]},
    {"replicas": [{**REPLICA, "room": {"max_waiting_requests": -1}}]},
    {"replicas": []},
    {"replicas": [REPLICA, REPLICA]},
    {"replicas": [REPLICA, {**REPLICA, "name": "r2", "model_path": "/elsewhere"}]},
    {"replicas": [REPLICA], "queue": {"policy": "random"}},
    {"replicas": [REPLICA], "queue": {"max_queued": 0}},
    {"replicas": [{**REPLICA, "name": "bad name"}]},
    {"replicas": [REPLICA], "predictor": {"server": {"length_model": "oracle"}}},
    {"replicas": [{**REPLICA, "name": "Predictor"}]},
    {"replicas": [REPLICA], "predictor": {"server": {"nope": 1}}},
    {"replicas": [REPLICA], "predictor": {"client": {"deadline_ms": 0}}},
    {"replicas": [dict(REPLICA, scheduling={"policy": "nope"})]},
    {"replicas": [dict(REPLICA, scheduling={"reserved_slots": 0})]},
    {"replicas": [REPLICA], "tools": {"t": {"kind": "http", "url": "ftp://x"}}},
    {"replicas": [REPLICA], "tools": {"bad name!": {"kind": "emulated"}}},
    {"replicas": [REPLICA], "queue": {"policy": "lifo"}},
    {"replicas": [REPLICA], "queue": {"placement": "random"}},
    {"replicas": [REPLICA], "queue": {"default_slo_class": "gold"}},
    {"replicas": [REPLICA], "queue": {"durability": {"mode": "required"}}},  # needs redis_url
    {"replicas": [REPLICA], "queue": {"durability": {"mode": "sometimes"}}},
    {"replicas": [REPLICA], "queue": {"eviction": {"margin": 1}}},
    {"replicas": [REPLICA], "slo_classes": {"x": {"ttft_ms": 5, "admission": "maybe"}}},
])
def test_rejects_bad_config(bad):
    with pytest.raises(ValidationError):
        AppConfig.model_validate(bad)


def test_every_field_is_described():
    for model in (AppConfig, BenchDefaults, QueueConfig, ReplicaConfig, EngineConfig, PredictorAppConfig,
                  PredictorConfig, ClientConfig, SchedulingConfig, ProfilingConfig,
                  HttpToolConfig, EmulatedToolConfig, SLOClass, DurabilityConfig,
                  EvictionConfig, StoreConfig):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_durability_is_the_store_config_plus_mode():
    d = DurabilityConfig(mode="required", redis_url="redis://h:1/0", write_timeout_s=0.2)
    assert d.store_config() == StoreConfig(redis_url="redis://h:1/0", write_timeout_s=0.2)
    with pytest.raises(ValidationError):
        DurabilityConfig(redis_url="http://h:1")  # the store's scheme check applies


def test_the_policy_names_a_config_accepts_are_the_registries_keys() -> None:
    from typing import get_args

    from augserve_common.names import LengthModelName, PlacementName, QueuePolicyName
    from orchestrator.policies import PLACEMENT_POLICIES, QUEUE_POLICIES
    from predictor_service.length_models import LENGTH_MODELS
    assert set(get_args(QueuePolicyName)) == set(QUEUE_POLICIES)
    assert set(get_args(PlacementName)) == set(PLACEMENT_POLICIES)
    assert set(get_args(LengthModelName)) == set(LENGTH_MODELS) | {"auto"}


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("policy", "lifo", "'fifo', 'priority', 'edf' or 'qlm'"),
    ("placement", "random", "'least-loaded' or 'estimated-completion'")])
def test_an_unknown_policy_name_is_refused_naming_the_allowed_ones(field, value, allowed) -> None:
    from orchestrator.config import QueueConfig
    with pytest.raises(ValidationError) as info:
        QueueConfig.model_validate({field: value})
    message = str(info.value)
    assert field in message and repr(value) in message and allowed in message, message
