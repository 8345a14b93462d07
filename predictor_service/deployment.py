"""The predictor inside the Serve application: a deployment (a named Ray actor that Serve
restarts when it dies or fails its health check) hosting the gRPC server.  Callers learn
the address with ``handle.address.remote()`` (see :func:`predictor_service.client.resolver`)."""

from __future__ import annotations

from typing import Any

from ray import serve

from predictor_service.config import PredictorConfig
from predictor_service.server import PredictorServer


@serve.deployment(num_replicas=1, health_check_period_s=5, graceful_shutdown_timeout_s=10,
                  ray_actor_options={"num_cpus": 0})
class Predictor:
    async def __init__(self, config: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        import ray
        self._config = PredictorConfig.model_validate(config)
        self._server = await PredictorServer(self._config).start()
        host = self._config.host
        if host in ("0.0.0.0", "[::]", "::"):
            host = ray.util.get_node_ip_address()
        self._address = f"{host}:{self._server.port}"

    async def address(self) -> str:
        return self._address

    async def check_health(self) -> None:
        if self._server.core.stopped:
            raise RuntimeError("the predictor server has stopped")

    async def __del__(self) -> None:
        await self._server.stop(grace_s=2.0)

