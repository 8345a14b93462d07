"""Every admission ends in one outcome; the value doubles as a metric label."""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    COMPLETED = "completed"
    REJECTED_INVALID = "rejected_invalid"
    REJECTED_OVERLOAD = "rejected_overload"
    REJECTED_NO_REPLICA = "rejected_no_replica"
    #: The estimator said no replica meets the SLO and its class rejects (429).
    REJECTED_SLO = "rejected_slo"
    #: No durable store to write it to while durability is required (503).
    REJECTED_UNDURABLE = "rejected_undurable"
    EXPIRED = "expired"
    #: Taken back from a replica that had not started it (the request itself re-queues).
    EVICTED = "evicted"
    #: Recovered after a restart, its caller never came back for it.
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"
    FAILED = "failed"
