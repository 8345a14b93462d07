"""Builders of the Serve application (``import_path: orchestrator.app:build_app``)."""

from __future__ import annotations

import logging
from typing import Any

from ray.serve import Application

from orchestrator.config import AppConfig
from orchestrator.ingress import Ingress
from orchestrator.queue_manager import QueueManager
from predictor_service.deployment import Predictor
from replicas.config import default_model_path
from replicas.deployment import LLMReplica

logger = logging.getLogger(__name__)


def ensure_default_model(config: AppConfig) -> None:
    """Build the tiny model if a replica uses the default path and it is missing."""
    if any(r.model_path is None for r in config.replicas):
        from replicas.tiny_model import build_tiny_model
        build_tiny_model(default_model_path())


def build_app(args: dict[str, Any]) -> Application:
    config = AppConfig.model_validate(args)
    ensure_default_model(config)
    # Serve's decorators make these deployments (bind / options), which mypy cannot see
    queue_manager = QueueManager.bind({  # type: ignore[attr-defined]
        "queue": config.queue.model_dump(mode="json"),
        "slo_classes": {k: v.model_dump(mode="json") for k, v in config.slo_classes.items()}})
    predictor, client = None, None
    if config.predictor.enabled:
        client = config.predictor.client.model_dump(mode="json")
    if config.hosts_predictor():
        predictor = Predictor.bind(  # type: ignore[attr-defined]
            config.predictor.server.model_dump(mode="json"))
    replicas = {
        r.name: LLMReplica.options(name=r.name).bind(  # type: ignore[attr-defined]
            r.model_dump(mode="json"), queue_manager, predictor, client, config.tools)
        for r in config.replicas
    }
    return Ingress.bind(  # type: ignore[attr-defined]
        config.model_dump(mode="json"), queue_manager, replicas, predictor)
