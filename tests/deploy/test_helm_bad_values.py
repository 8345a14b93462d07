"""Bad values fail `helm template` with a message that names the problem: the schema
(values.schema.json) for types, ranges and unknown keys; the templates for what a schema
cannot say (and for users who skip schema validation)."""

from __future__ import annotations

import pytest

from tests.deploy.helm import CHART, helm, write_values

CLASS = {"name": "l4", "acceleratorType": "L4", "model": "qwen2.5-7b-instruct", "replicas": 1}

# values -> what the error must say; checked with the schema and, where the templates
# check it too, with --skip-schema-validation.
BY_TEMPLATE = {
    "no-gpu-class": ({"gpuClasses": []}, "gpuClasses is empty: list at least one GPU class"),
    "negative-replicas": ({"gpuClasses": [{**CLASS, "replicas": -1}]},
                          "gpuClasses[0] (l4): replicas must be 0 or more, got -1"),
    "missing-model": ({"gpuClasses": [{**CLASS, "model": "llama-3-8b"}]},
                      'gpuClasses[0] (l4) serves model "llama-3-8b", which is not in models '
                      "(qwen2.5-7b-instruct)"),
    "no-models": ({"models": []}, "models is empty: list at least one model"),
    "no-class-serving": ({"gpuClasses": [{**CLASS, "replicas": 0}]},
                         "every GPU class has replicas: 0"),
    "class-twice": ({"gpuClasses": [CLASS, CLASS]}, 'gpuClasses: "l4" is listed twice'),
    "external-without-address": ({"redis": {"mode": "external"}},
                                 "redis.mode is external but redis.external.address"),
    "ft-without-redis": ({"redis": {"mode": "none"}}, "gcsFaultTolerance.enabled needs Redis"),
    "required-without-redis": ({"redis": {"mode": "none"}, "gcsFaultTolerance": {"enabled": False}},
                               "queue.durability.mode is required but redis.mode is none"),
}
BY_SCHEMA = {
    "negative-replicas": ({"gpuClasses": [{**CLASS, "replicas": -1}]},
                          "/gpuClasses/0/replicas", "minimum"),
    "unknown-engine-key": ({"gpuClasses": [{**CLASS, "engine": {"max_num_seq": 8}}]},
                           "/gpuClasses/0/engine", "max_num_seq"),
    "unknown-queue-policy-type": ({"queue": {"policy": 3}}, "/queue/policy", "string"),
    "unknown-top-level-key": ({"gpuClass": []}, "gpuClass", "additional properties"),
    "replica-policy-typo": ({"gpuClasses": [{**CLASS, "scheduling": {"policy": "lampz"}}]},
                            "/gpuClasses/0/scheduling/policy", "lamps"),
    "redis-url-in-values": ({"queue": {"durability": {"redis_url": "redis://:pw@h:6379"}}},
                            "/queue/durability", "redis_url"),
    "no-gpu-class": ({"gpuClasses": []}, "/gpuClasses", "minItems"),
    "class-without-accelerator": ({"gpuClasses": [{k: v for k, v in CLASS.items()
                                                   if k != "acceleratorType"}]},
                                  "/gpuClasses/0", "acceleratorType"),
}


def _template(tmp_path, values: dict, *extra: str):
    return helm("template", "augserve", CHART, "-f", write_values(tmp_path, values), *extra)


@pytest.mark.parametrize("case", sorted(BY_TEMPLATE))
def test_the_templates_refuse_bad_values_with_a_clear_message(tmp_path, case):
    values, message = BY_TEMPLATE[case]
    done = _template(tmp_path, values, "--skip-schema-validation")
    assert done.returncode != 0 and message in done.stderr, done.stderr
    done = _template(tmp_path, values)  # with the schema too (by it, or by the templates)
    assert done.returncode != 0, done.stdout[:500]


@pytest.mark.parametrize("case", sorted(BY_SCHEMA))
def test_the_schema_refuses_bad_values_and_names_the_value(tmp_path, case):
    values, where, what = BY_SCHEMA[case]
    done = _template(tmp_path, values)
    assert done.returncode != 0, done.stdout[:500]
    assert "values don't meet the specifications of the schema" in done.stderr
    assert where in done.stderr and what in done.stderr, done.stderr


def test_good_values_of_the_same_shape_render(tmp_path):
    done = _template(tmp_path, {"gpuClasses": [{**CLASS, "engine": {"max_num_seqs": 8}},
                                               {**CLASS, "name": "spare", "replicas": 0}]})
    assert done.returncode == 0, done.stderr
