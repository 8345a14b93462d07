"""One real Ray Serve application for the whole integration session: the heterogeneous
fleet of ``deploy/serve/hetero-local.yaml`` (three real vLLM CPU engines of different
capacity, tiny model), its queue manager durable in a real ``redis-server`` that the
session starts; every test leaves the queue and the replicas empty."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import httpx
import pytest
import yaml

from benchmarks.client_capacity import free_port
from orchestrator import serving
from tests.integration.predictor_procs import RedisProcess

HETERO_CONFIG = serving.REPO_ROOT / "deploy" / "serve" / "hetero-local.yaml"


@dataclass
class ServedApp:
    base_url: str
    model: str
    max_queued: int
    redis: RedisProcess | None = None

    def queue_state(self) -> dict:
        return httpx.get(f"{self.base_url}/v1/admin/queue", timeout=10).json()

    def wait_idle(self, timeout_s: float = 30.0) -> dict:
        """Poll until nothing is queued or in flight and every replica's KV is free."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.queue_state()
            idle = (state["num_queued"] == 0 and state["num_in_flight"] == 0
                    and all(r["kv_usage"] == 0 and r["num_running"] == 0
                            for r in state["replicas"] if r["healthy"]))
            if idle or time.monotonic() > deadline:
                return state
            time.sleep(0.25)


def deployment_actor(deployment: str):
    """The Ray actor of the single replica of one of the app's deployments."""
    import ray
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if f"#{deployment}#" in a["name"]]
    assert len(names) == 1, names
    return ray.get_actor(names[0], namespace="serve")


#: The shared app's Redis requires a password with characters a URL cannot hold as they
#: are; the queue manager reads both from its environment as the Helm chart's pods do
#: (redis_url_env, redis_password_env), inherited from this process by Ray's workers.
REDIS_PASSWORD = "s3cr#t:@/%?"
REDIS_ENV = {"url": "AUGSERVE_TEST_REDIS_URL", "password": "AUGSERVE_TEST_REDIS_PASSWORD"}


def test_config(port: int) -> dict:
    raw = copy.deepcopy(yaml.safe_load(HETERO_CONFIG.read_text()))
    raw["http_options"]["port"] = port
    args = raw["applications"][0]["args"]
    args["queue"]["max_queued"] = 64  # small, so that a burst can fill it
    durability = args["queue"]["durability"]
    del durability["redis_url"]
    durability.update(redis_url_env=REDIS_ENV["url"], redis_password_env=REDIS_ENV["password"])
    # an SLO no replica can meet (one prefill step alone is longer), refused at admission
    args["slo_classes"]["instant"] = {"ttft_ms": 1, "admission": "reject"}
    # one server-side tool: requests may offer only it (400 otherwise)
    args["tools"] = {"lookup": {"kind": "emulated", "duration_s": 0.05,
                                "result_text": '{"found": true}'}}
    return raw


@pytest.fixture(scope="session")
def served_app(tmp_path_factory):
    from ray.serve.schema import ServeDeploySchema

    redis = RedisProcess(free_port(), tmp_path_factory.mktemp("queue-redis"), REDIS_PASSWORD)
    port = free_port()
    schema = ServeDeploySchema.model_validate(test_config(port))
    mp = pytest.MonkeyPatch()  # Ray's processes inherit these; undone at the end
    mp.setenv(REDIS_ENV["url"], redis.url)
    mp.setenv(REDIS_ENV["password"], REDIS_PASSWORD)
    serving.start_ray()
    try:
        serving.deploy(schema, timeout_s=400)
        yield ServedApp(base_url=f"http://127.0.0.1:{port}", model="tiny-llama", max_queued=64,
                        redis=redis)
    finally:
        serving.shutdown()
        redis.stop()
        mp.undo()


@pytest.fixture
def app(served_app: ServedApp):
    yield served_app
    state = served_app.wait_idle()
    assert state["num_queued"] == 0, state
    assert state["num_in_flight"] == 0, state
    for replica in state["replicas"]:
        if replica["healthy"]:
            assert replica["kv_usage"] == 0, replica
