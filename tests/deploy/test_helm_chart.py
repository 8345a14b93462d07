"""The Helm chart (k8s/charts/augserve): lint, render with the default values and with
three GPU classes, validate what it renders against KubeRay's CRDs and Serve's schema, and
refuse bad values with a message that names the problem."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from orchestrator.config import AppConfig
from orchestrator.serving import REPO_ROOT, SERVE_ENV_DEFAULTS, load_serve_config
from tests.deploy.helm import CHART, THREE_CLASSES, helm, render, write_values
from tests.deploy.yaml_comments import uncommented_keys

SCHEMAS = REPO_ROOT.parent / "shared" / "k8s-schemas"
VALUES_FILES = {"default": (), "three-gpu-classes": (THREE_CLASSES,)}


def crd_schema(kind: str) -> dict:
    """The CRD's v1 ``openAPIV3Schema``, strict: the API server silently drops a field the
    schema does not know (a typo, or a field of a newer KubeRay), so every object that
    lists its properties and does not preserve unknown fields refuses other keys."""
    crd = yaml.safe_load((SCHEMAS / f"ray.io_{kind.lower()}s.yaml").read_text())
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return _strict(v1["schema"]["openAPIV3Schema"])


def _strict(node):
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
    elif isinstance(node, list):
        node = [_strict(v) for v in node]
    return node


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def ray_service(objects: list[dict]) -> dict:
    (rs,) = of_kind(objects, "RayService")
    return rs


def serve_config(rs: dict) -> dict:
    return yaml.safe_load(rs["spec"]["serveConfigV2"])


@pytest.fixture(scope="module", params=sorted(VALUES_FILES))
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(*VALUES_FILES[request.param])


def test_helm_lint_passes_with_both_values_files():
    for values in VALUES_FILES.values():
        args = ["lint", CHART, "--strict"] + [a for v in values for a in ("-f", v)]
        done = helm(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_ray_service_and_its_cluster_validate_against_kuberays_crds(rendered):
    _, objects = rendered
    rs = ray_service(objects)
    jsonschema.Draft7Validator(crd_schema("RayService")).validate(rs)
    # What KubeRay makes of rayClusterConfig: a RayCluster with that spec.
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster",
               "metadata": {"name": rs["metadata"]["name"]},
               "spec": rs["spec"]["rayClusterConfig"]}
    jsonschema.Draft7Validator(crd_schema("RayCluster")).validate(cluster)
    for other in of_kind(objects, "RayCluster"):
        jsonschema.Draft7Validator(crd_schema("RayCluster")).validate(other)


@pytest.mark.parametrize("where, key, value, message", [
    (("workerGroupSpecs", 0), "replicas", "two", "'two' is not of type 'integer'"),
    (("workerGroupSpecs", 0), "resourcez", {"augserve_system": "1"}, "'resourcez' was unexpected"),
    (("headGroupSpec", "template", "spec"), "nodeSelectr", {}, "'nodeSelectr' was unexpected"),
])
def test_the_crd_schema_catches_a_malformed_or_misspelled_field(rendered, where, key, value,
                                                                 message):
    rs = copy.deepcopy(ray_service(rendered[1]))
    node = rs["spec"]["rayClusterConfig"]
    for step in where:
        node = node[step]
    node[key] = value
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.Draft7Validator(crd_schema("RayService")).validate(rs)


def test_serve_config_v2_is_a_valid_serve_config_of_the_application(rendered, tmp_path):
    config = serve_config(ray_service(rendered[1]))
    ServeDeploySchema.model_validate(config)
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    load_serve_config(path)  # args against AppConfig, deployments against what it creates
    (app,) = config["applications"]
    assert app["import_path"] == "orchestrator.app:build_app"


def test_each_gpu_class_is_a_worker_group_with_gpus_and_a_pinned_deployment(rendered):
    name, objects = rendered
    rs = ray_service(objects)
    groups = {g["groupName"]: g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    (app,) = serve_config(rs)["applications"]
    args = AppConfig.model_validate(app["args"])
    deployments = {d["name"]: d for d in app["deployments"]}
    assert len(args.replicas) == (3 if name == "three-gpu-classes" else 1)
    for replica in args.replicas:
        cls = replica.name.removeprefix("replica-")
        group = groups[f"gpu-{cls}"]
        (container,) = group["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert group["template"]["spec"]["nodeSelector"] and group["template"]["spec"]["tolerations"]
        options = deployments[replica.name]["ray_actor_options"]
        assert options["accelerator_type"] == replica.gpu_class and options["num_gpus"] == 1
        assert group["replicas"] == deployments[replica.name]["num_replicas"]
    system = groups["system"]
    assert system["resources"] == {"augserve_system": "100"}
    for control in ("Ingress", "Predictor", "QueueManager"):
        assert deployments[control]["ray_actor_options"]["resources"] == {"augserve_system": 1}
    head = rs["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"


def test_gcs_fault_tolerance_and_the_app_share_the_charts_redis_by_default():
    objects = render()
    rs = ray_service(objects)
    ft = rs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    (statefulset,) = of_kind(objects, "StatefulSet")
    (secret,) = of_kind(objects, "Secret")
    assert ft["redisAddress"] == "augserve-redis:6379"
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    # KubeRay's default (each RayCluster's UID) keeps an upgrade's two clusters apart.
    assert "externalStorageNamespace" not in ft
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    # docs/deploy.md's clean-up deletes the kept secret and volume by this label
    for kept in (claim, secret):
        assert kept["metadata"]["labels"]["app.kubernetes.io/instance"] == "augserve"
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "$(REDISCLI_AUTH)" in args and args[args.index("--maxmemory-policy") + 1] == "noeviction"
    (app,) = serve_config(rs)["applications"]
    source = {"redis_url_env": "AUGSERVE_REDIS_URL", "redis_password_env": "AUGSERVE_REDIS_PASSWORD"}
    assert app["args"]["queue"]["durability"] == {"mode": "required", **source}
    assert source.items() <= app["args"]["predictor"]["server"].items()
    for container in _containers(rs):
        env = {e["name"]: e for e in container["env"]}
        assert env["AUGSERVE_REDIS_URL"]["value"] == "redis://augserve-redis:6379/0"
        assert env["AUGSERVE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
        for name, value in SERVE_ENV_DEFAULTS.items():
            assert env[name]["value"] == value


def _containers(rs: dict) -> list[dict]:
    spec = rs["spec"]["rayClusterConfig"]
    pods = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
    return [c for p in pods for c in p["template"]["spec"]["containers"]]


def test_an_existing_redis_by_address_and_secret(tmp_path):
    values = write_values(tmp_path, {"redis": {"mode": "external", "external": {
        "address": "redis.example.internal:6380", "tls": True,
        "passwordSecret": {"name": "my-redis", "key": "auth"}}}})
    objects = render(values)
    assert not of_kind(objects, "StatefulSet") and not of_kind(objects, "Secret")
    rs = ray_service(objects)
    ft = rs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] == "rediss://redis.example.internal:6380"  # Ray: TLS by scheme
    assert ft["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "auth"}
    env = {e["name"]: e for e in _containers(rs)[0]["env"]}
    assert env["AUGSERVE_REDIS_URL"]["value"] == "rediss://redis.example.internal:6380/0"
    assert env["AUGSERVE_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis",
                                                                         "key": "auth"}


def test_without_redis_the_queue_is_in_memory_and_there_is_no_fault_tolerance(tmp_path):
    values = write_values(tmp_path, {"redis": {"mode": "none"},
                                     "gcsFaultTolerance": {"enabled": False},
                                     "queue": {"policy": "edf", "durability": {"mode": "best_effort"}}})
    rs = ray_service(render(values))
    assert "gcsFaultToleranceOptions" not in rs["spec"]["rayClusterConfig"]
    (app,) = serve_config(rs)["applications"]
    config = AppConfig.model_validate(app["args"])
    assert config.queue.durability.redis_url_env is None and config.queue.policy == "edf"
    assert all("AUGSERVE_REDIS_URL" not in {e["name"] for e in c["env"]} for c in _containers(rs))


def test_the_http_endpoint_and_the_optional_service_monitor():
    objects = render(THREE_CLASSES)
    rs = ray_service(objects)
    service = rs["spec"]["serveService"]
    assert service["spec"]["type"] == "LoadBalancer" and service["spec"]["ports"][0]["port"] == 8000
    assert rs["spec"]["excludeHeadPodFromServeSvc"] is True
    (monitor,) = of_kind(objects, "ServiceMonitor")
    metrics = [s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-metrics")]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics[0]["metadata"]["labels"].items()
    pod_labels = rs["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert metrics[0]["spec"]["selector"].items() <= pod_labels.items()
    # KubeRay's stable head service selects app.kubernetes.io/name=kuberay: not overridden.
    assert "app.kubernetes.io/name" not in pod_labels
    assert not of_kind(render(), "ServiceMonitor")  # off by default


def test_the_three_class_values_deploy_what_the_ray_cluster_path_deploys():
    """k8s/values/three-gpu-classes.yaml and deploy/serve/cluster.yaml: one application."""
    chart = serve_config(ray_service(render(THREE_CLASSES)))
    ray_up = yaml.safe_load((REPO_ROOT / "deploy" / "serve" / "cluster.yaml").read_text())
    # The one difference: the chart's Redis has a password (the ray up example's has none).
    args = chart["applications"][0]["args"]
    for section in (args["queue"]["durability"], args["predictor"]["server"]):
        assert section.pop("redis_password_env") == "AUGSERVE_REDIS_PASSWORD"
    assert chart == ray_up


def test_a_class_with_no_replicas_keeps_an_empty_worker_group_and_no_deployment(tmp_path):
    classes = [{"name": "l4", "acceleratorType": "L4", "model": "qwen2.5-7b-instruct",
                "replicas": 1},
               {"name": "h100", "acceleratorType": "H100", "model": "qwen2.5-7b-instruct",
                "replicas": 0}]
    rs = ray_service(render(write_values(tmp_path, {"gpuClasses": classes})))
    groups = {g["groupName"]: g for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert groups["gpu-h100"]["replicas"] == groups["gpu-h100"]["maxReplicas"] == 0
    config = serve_config(rs)
    ServeDeploySchema.model_validate(config)  # Serve refuses num_replicas: 0
    (app,) = config["applications"]
    assert [r["name"] for r in app["args"]["replicas"]] == ["replica-l4"]
    assert "replica-h100" not in {d["name"] for d in app["deployments"]}


def test_upgrade_strategy_and_a_chosen_storage_namespace(tmp_path):
    values = write_values(tmp_path, {"upgradeStrategy": "None",
                                     "gcsFaultTolerance": {"externalStorageNamespace": "prod"}})
    rs = ray_service(render(values))
    assert rs["spec"]["upgradeStrategy"] == {"type": "None"}
    assert rs["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"][
        "externalStorageNamespace"] == "prod"
    assert ray_service(render())["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


def test_notes_tell_how_to_send_a_request():
    done = helm("install", "augserve", CHART, "--dry-run=client", "--namespace", "serving")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "port-forward svc/augserve-serve 8000:8000" in notes
    assert "/v1/chat/completions" in notes and '"model": "qwen2.5-7b-instruct"' in notes


def test_values_files_comment_every_key():
    assert uncommented_keys((CHART / "values.yaml").read_text()) == []
    assert uncommented_keys(THREE_CLASSES.read_text()) == []


def test_the_values_schema_is_generated_from_the_config_models():
    import tools.chart_schema as chart_schema
    assert (CHART / "values.schema.json").read_text() == chart_schema.render(), \
        "stale: run make chart-schema"
