"""The names a config may give a policy or model, as ``Literal`` types (the config rejects
anything else, naming the allowed values; the chart's schema lists them).  Each registry
has exactly these keys (a test checks)."""

from __future__ import annotations

from typing import Literal

#: orchestrator.queue_policy's registry
QueuePolicyName = Literal["fifo", "priority", "edf", "qlm"]
#: orchestrator.placement's registry
PlacementName = Literal["least-loaded", "estimated-completion"]
#: predictor_service.length_models' registry, plus "auto"
LengthModelName = Literal["auto", "embedding-knn", "hashed-linear", "classifier"]
