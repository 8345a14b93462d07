"""The names a config may give a policy or model, as ``Literal`` types (the config rejects
anything else, naming the allowed values; the chart's schema lists them).  Each registry
has exactly these keys (a test checks)."""

from __future__ import annotations

from typing import Literal

#: orchestrator.policies' QUEUE_POLICIES
QueuePolicyName = Literal["fifo", "priority", "edf", "qlm"]
#: orchestrator.policies' PLACEMENT_POLICIES
PlacementName = Literal["least-loaded", "estimated-completion"]
#: predictor_service.length_models' registry, plus "auto"
LengthModelName = Literal["auto", "embedding-knn", "hashed-linear", "classifier"]
