"""Every Serve config under deploy/serve is valid for Ray Serve and for augserve."""

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from orchestrator.config import AppConfig
from orchestrator.serving import REPO_ROOT, load_serve_config
from tests.deploy.yaml_comments import uncommented_keys

CONFIGS = sorted((REPO_ROOT / "deploy" / "serve").glob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "local.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates(path: Path):
    raw = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    load_serve_config(path)
    for app in schema.applications:
        cfg = AppConfig.model_validate(app.args)
        declared = {d.name for d in app.deployments}
        assert declared <= cfg.deployment_names()
        assert {r.name for r in cfg.replicas} <= declared


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_key_is_commented(path: Path):
    assert uncommented_keys(path.read_text()) == []  # CONVENTIONS.md item 12


def test_bad_args_are_rejected(tmp_path):
    raw = yaml.safe_load((REPO_ROOT / "deploy" / "serve" / "local.yaml").read_text())
    raw["applications"][0]["args"]["queue"]["no_such_key"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match="no_such_key"):
        load_serve_config(bad)


@pytest.mark.parametrize("predictor", [{"enabled": False}, {"client": {"address": "10.0.0.9:50051"}}])
def test_a_predictor_deployment_the_app_does_not_create_is_named(tmp_path, predictor):
    raw = yaml.safe_load((REPO_ROOT / "deploy" / "serve" / "local.yaml").read_text())
    raw["applications"][0]["args"]["predictor"] = predictor
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError, match="remove 'Predictor'"):
        load_serve_config(bad)
    raw["applications"][0]["deployments"] = [
        d for d in raw["applications"][0]["deployments"] if d["name"] != "Predictor"]
    bad.write_text(yaml.safe_dump(raw))
    load_serve_config(bad)


def test_the_five_lamps_bench_configs_differ_only_in_the_policy():
    policies = ["fcfs", "infercept", "sjf", "lamps", "lamps-oracle"]
    raws = {p: yaml.safe_load((REPO_ROOT / "deploy" / "serve" / f"bench-{p}.yaml").read_text())
            for p in policies}
    for p, raw in raws.items():
        replica = raw["applications"][0]["args"]["replicas"][0]
        assert replica["scheduling"].pop("policy") == p
    first = raws["fcfs"]
    assert all(raw == first for raw in raws.values())
    assert first["applications"][0]["args"]["bench"]["rates"]  # compare's defaults live here


def test_the_three_hetero_bench_configs_differ_only_in_the_queue_policy():
    raws = {p: yaml.safe_load((REPO_ROOT / "deploy" / "serve" / f"hetero-{p}.yaml").read_text())
            for p in ("fifo", "edf", "qlm")}
    for p, raw in raws.items():
        assert raw["applications"][0]["args"]["queue"].pop("policy") == p
    first = raws["fifo"]
    assert all(raw == first for raw in raws.values())
    args = first["applications"][0]["args"]
    assert {r["scheduling"]["policy"] for r in args["replicas"]} == {"lamps"}
    assert len({r["gpu_class"] for r in args["replicas"]}) == 3
    assert args["bench"]["arrival"] == "bursty" and args["bench"]["slo_shares"]


def test_the_heterogeneous_fleet_has_three_classes_and_durable_queue():
    raw = yaml.safe_load((REPO_ROOT / "deploy" / "serve" / "hetero-local.yaml").read_text())
    args = raw["applications"][0]["args"]
    seqs = [r["engine"]["max_num_seqs"] for r in args["replicas"]]
    assert len(set(seqs)) == 3 and len({r["engine"]["kv_cache_gib"] for r in args["replicas"]}) == 3
    durability = args["queue"]["durability"]
    assert durability["mode"] == "required" and durability["redis_url"].startswith("redis://")
