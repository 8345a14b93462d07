"""Run a Serve config file locally: start (or join) Ray, deploy, wait until running."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "deploy" / "serve" / "local.yaml"


def load_serve_config(path: str | Path) -> Any:
    """Parse and validate a Serve config file (``ServeDeploySchema`` and our ``args``)."""
    from ray.serve.schema import ServeDeploySchema

    from orchestrator.config import AppConfig

    raw = yaml.safe_load(Path(path).read_text())
    schema = ServeDeploySchema.model_validate(raw)
    for app in schema.applications:
        if app.import_path.startswith("orchestrator.app:"):
            config = AppConfig.model_validate(app.args or {})
            unknown = {d.name for d in app.deployments} - config.deployment_names()
            if unknown:
                raise ValueError(
                    f"{path}: application {app.name!r} lists deployments {sorted(unknown)} that "
                    f"its args do not create (it creates {sorted(config.deployment_names())}); "
                    "e.g. remove 'Predictor' when predictor.enabled is false or "
                    "predictor.client.address is set")
    return schema


#: Serve settings for a Ray cluster that this process starts.  Running user code and the
#: router on the replica's own event loop removes a thread hop per streamed message
#: (measured with ``augserve bench overhead``: about +40 % requests/s on 2 cores).
SERVE_ENV_DEFAULTS = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
}


def start_ray(num_cpus: int | None = None) -> None:
    import ray
    if ray.is_initialized():
        return
    for key, value in SERVE_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def deploy(schema: Any, timeout_s: float = 600.0) -> None:
    """Deploy every application of ``schema`` and wait until all are RUNNING."""
    from ray.serve._private.api import serve_start  # the path `serve run CONFIG` uses
    from ray.serve.config import gRPCOptions

    from orchestrator.app import ensure_default_model
    from orchestrator.config import AppConfig

    for app in schema.applications:  # build the tiny model once, before replicas start
        if app.import_path.startswith("orchestrator.app:"):
            ensure_default_model(AppConfig.model_validate(app.args or {}))
    client = serve_start(http_options=schema.http_options.model_dump(),
                         proxy_location=schema.proxy_location,
                         grpc_options=gRPCOptions(**schema.grpc_options.model_dump()))
    client.deploy_apps(schema, _blocking=False)
    wait_running([a.name for a in schema.applications], timeout_s)
    logger.info("deployed %s", [a.name for a in schema.applications])


def wait_running(app_names: list[str], timeout_s: float) -> None:
    from ray import serve
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status()
        states = {n: status.applications.get(n) for n in app_names}
        if all(s is not None and s.status == "RUNNING" for s in states.values()):
            return
        failed = {n: s.message for n, s in states.items() if s is not None
                  and s.status in ("DEPLOY_FAILED", "UNHEALTHY")}
        if failed:
            raise RuntimeError(f"deployment failed: {failed}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications not running after {timeout_s:.0f}s: "
                               f"{ {n: (s.status if s else None) for n, s in states.items()} }")
        time.sleep(1.0)


def shutdown() -> None:
    import ray
    from ray import serve
    try:
        serve.shutdown()
    finally:
        ray.shutdown()
