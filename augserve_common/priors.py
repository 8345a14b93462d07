"""Priors used wherever a prediction is missing, defined once.

The predictor starts from these (its config's defaults), the replica falls back to them
when it has no prediction, and the queue manager's estimator when a request carries
none."""

from __future__ import annotations

#: Output tokens assumed for a request (or turn) with no length prediction.
FALLBACK_OUTPUT_TOKENS = 128.0
#: Seconds assumed for an API call with no duration prediction (mean) ...
DEFAULT_API_S = 5.0
#: ... and its 90th percentile.
DEFAULT_API_P90_S = 15.0
#: A replica's step line ``t = a·x + c`` ms before it has been measured.
DEFAULT_A_MS_PER_TOKEN = 0.05
DEFAULT_C_MS = 10.0
