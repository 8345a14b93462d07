"""The request router pins each request to the replica the queue manager chose.  With two
replicas in one deployment a router that ignored the assignment would send about half the
requests elsewhere; each replica stamps its own id on the stream (``served_by``), so the
test compares what the replica says with what the queue manager decided."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from benchmarks.client_capacity import free_port
from orchestrator import serving

pytestmark = [pytest.mark.integration, pytest.mark.exclusive_ray,
              pytest.mark.usefixtures("exclusive_ray")]

NUM_REQUESTS = 24


def two_replica_config(port: int) -> dict:
    raw = copy.deepcopy(yaml.safe_load(serving.DEFAULT_CONFIG.read_text()))
    raw["http_options"]["port"] = port
    args = raw["applications"][0]["args"]
    small = next(r for r in args["replicas"] if r["name"] == "replica-small")
    small["engine"]["max_num_seqs"] = 2  # little room each: the queue uses both replicas
    small["room"]["max_waiting_requests"] = 1
    args["replicas"] = [small]
    deployments = [d for d in raw["applications"][0]["deployments"]
                   if d["name"] != "replica-large"]
    for d in deployments:
        if d["name"] == "replica-small":
            d["num_replicas"] = 2
    raw["applications"][0]["deployments"] = deployments
    return raw


def test_each_request_runs_on_the_replica_the_queue_manager_chose():
    from ray.serve.schema import ServeDeploySchema

    port = free_port()
    schema = ServeDeploySchema.model_validate(two_replica_config(port))
    serving.start_ray()
    try:
        serving.deploy(schema, timeout_s=400)

        def one(i: int) -> dict:
            r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=120, json={
                "model": "tiny-llama", "prompt": f"request {i}", "max_tokens": 24,
                "ignore_eos": True})
            assert r.status_code == 200, r.text
            return r.json()["augserve"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(NUM_REQUESTS)))
    finally:
        serving.shutdown()
    chosen = {a["replica_id"] for a in answers}
    assert len(chosen) == 2, chosen  # both replicas were given work
    for a in answers:
        assert a["served_by"] == a["replica_id"], a
