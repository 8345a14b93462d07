"""One real Ray Serve application shared by the integration tests: the heterogeneous
fleet of ``deploy/serve/hetero-local.yaml`` (three real vLLM CPU engines of different
capacity, tiny model), its queue manager durable in a real ``redis-server``; every test
leaves the queue and the replicas empty.

The tests hold in any order.  Two markers say what a test does to the shared app, and
the manager below acts on them: ``exclusive_ray`` tests deploy their own Serve apps, so
the shared one is stopped first; ``destructive`` tests kill parts of it, so whoever
comes next gets a fresh one unless the damaged one came back whole (every replica
healthy, nothing queued or in flight).  Collection runs the exclusive tests first and the
destructive ones last only so that the shared app starts once (about 70 s), not for
correctness."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import yaml

from benchmarks.client_capacity import free_port
from orchestrator import serving
from tests.integration.predictor_procs import RedisProcess

HETERO_CONFIG = serving.REPO_ROOT / "deploy" / "serve" / "hetero-local.yaml"
#: Replicas of the shared app (one per class of hetero-local.yaml).
NUM_REPLICAS = 3


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


EXCLUSIVE = "exclusive_ray"
DESTRUCTIVE = "destructive"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{EXCLUSIVE}: deploys its own Serve apps (the shared "
                            "app is stopped first)")
    config.addinivalue_line("markers", f"{DESTRUCTIVE}(rank=0): damages the shared app (the "
                            "next test gets a fresh one unless it came back whole); a higher "
                            "rank runs later")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Exclusive tests first, destructive ones last (stable otherwise): one shared app."""
    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker(EXCLUSIVE):
            return (0, 0)
        destructive = item.get_closest_marker(DESTRUCTIVE)
        if destructive is None:
            return (1, 0)
        return (2, destructive.kwargs.get("rank", 0))  # the most damaging last
    items.sort(key=rank)


class SharedApp:
    """Starts the shared app on demand, stops it for exclusive tests, replaces it after a
    destructive one (with a fresh Redis: nothing of the damaged app carries over)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._app: ServedApp | None = None
        self._mp: pytest.MonkeyPatch | None = None
        self.dirty = False
        self.num_starts = 0

    def get(self) -> ServedApp:
        if self._app is not None and self.dirty:
            self.dirty = False
            if not self._whole(self._app):
                self.stop()
        if self._app is None:
            self._app = self._start()
        return self._app

    @staticmethod
    def _whole(app: ServedApp) -> bool:
        try:
            state = app.wait_idle(timeout_s=60)
        except httpx.HTTPError:
            return False
        # replaced replicas may linger in the queue manager's view, unhealthy, for a while
        healthy = [r for r in state["replicas"] if r["healthy"]]
        return (len(healthy) == NUM_REPLICAS and state["num_queued"] == 0
                and state["num_in_flight"] == 0)

    def _start(self) -> ServedApp:
        from ray.serve.schema import ServeDeploySchema

        redis = RedisProcess(free_port(), self._tmp.mktemp("queue-redis"), REDIS_PASSWORD)
        port = free_port()
        schema = ServeDeploySchema.model_validate(test_config(port))
        self._mp = mp = pytest.MonkeyPatch()  # Ray's processes inherit these
        mp.setenv(REDIS_ENV["url"], redis.url)
        mp.setenv(REDIS_ENV["password"], REDIS_PASSWORD)
        serving.start_ray()
        try:
            serving.deploy(schema, timeout_s=400)
        except BaseException:
            serving.shutdown()
            redis.stop()
            mp.undo()
            raise
        self.num_starts += 1
        return ServedApp(base_url=f"http://127.0.0.1:{port}", model="tiny-llama", max_queued=64,
                         redis=redis)

    def stop(self) -> None:
        app, self._app, self.dirty = self._app, None, False
        if app is None:
            return
        try:
            serving.shutdown()
        finally:
            if app.redis is not None:
                app.redis.stop()
            if self._mp is not None:
                self._mp.undo()


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory) -> Iterator[SharedApp]:
    manager = SharedApp(tmp_path_factory)
    yield manager
    manager.stop()


@pytest.fixture
def served_app(shared_app: SharedApp, request: pytest.FixtureRequest) -> Iterator[ServedApp]:
    yield shared_app.get()
    if request.node.get_closest_marker(DESTRUCTIVE):
        shared_app.dirty = True


@pytest.fixture
def exclusive_ray(shared_app: SharedApp) -> None:
    """The test deploys its own Serve apps: no shared app may be running."""
    shared_app.stop()


@pytest.fixture
def app(served_app: ServedApp):
    yield served_app
    state = served_app.wait_idle()
    assert state["num_queued"] == 0, state
    assert state["num_in_flight"] == 0, state
    for replica in state["replicas"]:
        if replica["healthy"]:
            assert replica["kv_usage"] == 0, replica
