"""Write k8s/charts/augserve/values.schema.json: the chart's own keys (below) plus the
schemas of the application's config models (engine, room, scheduling, queue, SLO classes,
predictor, ingress), taken from the pydantic models themselves so that `helm install`
rejects what the application would reject.  A test checks the committed file is current:

    python tools/chart_schema.py            # rewrite the file (make chart-schema)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic.json_schema import models_json_schema

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from augserve_common.redis_url import RedisUrlSource
from orchestrator.config import IngressConfig, QueueConfig, SLOClass
from predictor_service.config import PredictorAppConfig
from replicas.config import EngineConfig, RoomConfig, SchedulingConfig

SCHEMA_PATH = REPO / "k8s" / "charts" / "augserve" / "values.schema.json"
#: Keys the chart sets itself from `redis` (a password must come from a secret).
CHART_MANAGED = tuple(RedisUrlSource.model_fields)
APP_MODELS = (EngineConfig, RoomConfig, SchedulingConfig, QueueConfig, SLOClass,
              PredictorAppConfig, IngressConfig)


def ref(name: str) -> dict:
    return {"$ref": f"#/$defs/{name}"}


def obj(properties: dict, required: tuple[str, ...] = (), description: str = "") -> dict:
    out = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


STR = {"type": "string"}
OPEN = {"type": "object"}  # Kubernetes structures (resources, nodeSelector) checked by the API
NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 40}
TOLERATIONS = {"type": "array", "items": {"type": "object"}}


def chart_keys() -> dict:
    gpu_class = obj({
        "name": NAME, "acceleratorType": {"type": "string", "minLength": 1},
        "model": {"type": "string", "minLength": 1},
        "replicas": {"type": "integer", "minimum": 0},
        "nodeSelector": OPEN, "tolerations": TOLERATIONS,
        "resources": obj({"cpu": {"type": ["string", "number"]}, "memory": STR}),
        "shmSize": STR, "engine": ref("EngineConfig"), "room": ref("RoomConfig"),
        "scheduling": ref("SchedulingConfig")},
        required=("name", "acceleratorType", "model", "replicas"),
        description="A GPU class: a worker group and a replica deployment pinned to it.")
    pod = {"resources": OPEN, "nodeSelector": OPEN, "tolerations": TOLERATIONS}
    secret_ref = obj({"name": STR, "key": {"type": "string", "minLength": 1}})
    return {
        "nameOverride": STR, "fullnameOverride": STR,
        "image": obj({"repository": {"type": "string", "minLength": 1}, "tag": STR,
                      "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}},
                     required=("repository",)),
        "imagePullSecrets": {"type": "array", "items": {"type": "object"}},
        "rayVersion": {"type": "string", "minLength": 1},
        "models": {"type": "array", "minItems": 1, "items": obj(
            {"name": {"type": "string", "minLength": 1}, "path": {"type": "string", "minLength": 1}},
            required=("name", "path"))},
        "huggingFace": obj({"tokenSecret": secret_ref}),
        "head": obj(pod),
        "system": obj({**pod, "replicas": {"type": "integer", "minimum": 1},
                       "ingressReplicas": {"type": "integer", "minimum": 1}}),
        "gpuClasses": {"type": "array", "minItems": 1, "items": gpu_class},
        "sloClasses": {"type": "object", "additionalProperties": ref("SLOClass")},
        "queue": ref("QueueConfig"), "predictor": ref("PredictorAppConfig"),
        "ingress": ref("IngressConfig"), "tools": OPEN,
        "serve": obj({"logLevel": {"enum": ["DEBUG", "INFO", "WARNING", "ERROR"]},
                      "accessLog": {"type": "boolean"}}),
        "redis": obj({
            "mode": {"enum": ["internal", "external", "none"]},
            "internal": obj({"image": {"type": "string", "minLength": 1}, "existingSecret": STR,
                             "maxMemory": {"type": "string", "minLength": 1},
                             "persistence": obj({"enabled": {"type": "boolean"},
                                                 "size": STR, "storageClassName": STR}),
                             **pod}),
            "external": obj({"address": STR, "tls": {"type": "boolean"},
                             "passwordSecret": secret_ref})}),
        "gcsFaultTolerance": obj({"enabled": {"type": "boolean"},
                                  "externalStorageNamespace": STR}),
        "service": obj({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                        "annotations": OPEN}),
        "upgradeStrategy": {"enum": ["NewCluster", "None"]},
        "metrics": obj({"serviceMonitor": obj({"enabled": {"type": "boolean"},
                                               "interval": STR, "labels": OPEN})}),
    }


def app_defs() -> dict:
    _, top = models_json_schema([(m, "validation") for m in APP_MODELS],
                                ref_template="#/$defs/{model}")
    defs = top["$defs"]
    for schema in defs.values():
        for key in CHART_MANAGED:
            schema.get("properties", {}).pop(key, None)
    return defs


def build() -> dict:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "augserve chart values", **obj(chart_keys()), "$defs": app_defs()}


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(render())
    print(f"wrote {SCHEMA_PATH}")
