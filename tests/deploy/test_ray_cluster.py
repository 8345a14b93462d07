"""The `ray up` path: deploy/ray/cluster.yaml against Ray's own ray-schema.json (and the
checks `ray up` runs on it), and deploy/serve/cluster.yaml placeable on its node types."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from orchestrator.config import AppConfig
from orchestrator.serving import REPO_ROOT, SERVE_ENV_DEFAULTS, load_serve_config
from tests.deploy.yaml_comments import uncommented_keys

CLUSTER = REPO_ROOT / "deploy" / "ray" / "cluster.yaml"
SERVE = REPO_ROOT / "deploy" / "serve" / "cluster.yaml"
SYSTEM_RESOURCE = "augserve_system"


RAY_SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def cluster() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def serve_app() -> dict:
    return yaml.safe_load(SERVE.read_text())["applications"][0]


def commands(config: dict) -> str:
    keys = ("setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return "\n".join(line for key in keys for line in config.get(key, []))


def test_the_cluster_file_validates_against_rays_schema():
    jsonschema.Draft7Validator(RAY_SCHEMA).validate(cluster())
    validate_config(prepare_config(cluster()))  # what `ray up` checks before launching


def test_a_key_ray_does_not_know_is_rejected():
    bad = cluster()
    bad["available_node_types"]["gpu-l4"]["min_worker"] = 1  # typo of min_workers
    errors = list(jsonschema.Draft7Validator(RAY_SCHEMA).iter_errors(bad))
    assert any("min_worker" in e.message for e in errors)


def test_every_key_of_the_cluster_file_is_commented():  # (Serve files: test_serve_configs)
    assert uncommented_keys(CLUSTER.read_text()) == []


def test_a_cpu_head_three_gpu_classes_and_a_system_node():
    config = cluster()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and "GPU" not in head["resources"]
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU")}
    accelerators = {k.split(":", 1)[1] for t in gpu_types.values() for k in t["resources"]
                    if k.startswith("accelerator_type:")}
    assert len(gpu_types) == 3 and len(accelerators) == 3
    for t in gpu_types.values():  # Ray adds no --gpus to `docker run` by itself
        assert "--gpus all" in t["docker"]["worker_run_options"]
    for name, t in types.items():
        if name != config["head_node_type"]:
            assert 0 <= t["min_workers"] <= t["max_workers"], name
    assert any(SYSTEM_RESOURCE in t["resources"] and t["min_workers"] >= 1 for t in types.values())
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]


def _node_types_for(options: dict, types: dict) -> list[str]:
    """Node types on which a deployment with these ray_actor_options can be placed."""
    need = {"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0),
            **options.get("resources", {})}
    if "accelerator_type" in options:
        need[f"accelerator_type:{options['accelerator_type']}"] = 0.001
    return [name for name, t in types.items()
            if all(t["resources"].get(k, 0) >= v for k, v in need.items() if v)]


def test_every_serve_deployment_fits_a_node_type_and_each_gpu_class_is_pinned():
    types = cluster()["available_node_types"]
    app = serve_app()
    config = AppConfig.model_validate(app["args"])
    replica_names = {r.name for r in config.replicas}
    for deployment in app["deployments"]:
        options = deployment.get("ray_actor_options", {})
        fits = _node_types_for(options, types)
        assert fits, f"{deployment['name']} fits no node type of {CLUSTER.name}"
        if deployment["name"] in replica_names:
            assert options.get("num_gpus", 0) >= 1 and "accelerator_type" in options
            assert len(fits) == 1, f"{deployment['name']} is not pinned to one GPU class"
        else:  # the control plane stays off the head and off the GPUs
            assert fits == [n for n, t in types.items() if SYSTEM_RESOURCE in t["resources"]]
    pinned = {d["ray_actor_options"]["accelerator_type"] for d in app["deployments"]
              if d["name"] in replica_names}
    assert pinned == {r.gpu_class for r in config.replicas}


def test_the_serve_app_is_the_one_make_serve_runs_with_real_models_and_redis_from_env():
    load_serve_config(SERVE)
    local = yaml.safe_load((REPO_ROOT / "deploy" / "serve" / "local.yaml").read_text())
    app = serve_app()
    assert app["import_path"] == local["applications"][0]["import_path"]
    config = AppConfig.model_validate(app["args"])
    assert all(r.model_path and "/" in r.model_path for r in config.replicas)  # Hub ids
    assert config.queue.durability.mode == "required"
    assert config.queue.durability.redis_url_env == "AUGSERVE_REDIS_URL"
    assert config.predictor.server.redis_url_env == "AUGSERVE_REDIS_URL"


def test_the_nodes_install_the_gpu_extra_and_export_what_the_app_reads():
    config, text = cluster(), commands(cluster())
    assert re.search(r"pip install .*augserve\[[^\]]*\bgpu\b", text)
    assert config["file_mounts"]["~/augserve"] == "."
    assert "export AUGSERVE_REDIS_URL=" in text
    for name in SERVE_ENV_DEFAULTS:  # the Serve settings `augserve serve` uses locally
        assert f"export {name}={SERVE_ENV_DEFAULTS[name]}" in text, name
    head = "\n".join(config["head_start_ray_commands"])
    assert "RAY_REDIS_ADDRESS=" in head and "--num-cpus=0" in head  # GCS fault tolerance
    assert text.count("REPLACE_WITH_REDIS_HOST") == 1  # one place to edit


def test_the_image_runs_the_ray_and_python_the_project_pins():
    image = cluster()["docker"]["image"]
    assert image.startswith(f"rayproject/ray:{ray.__version__}-py311")
