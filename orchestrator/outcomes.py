"""Every admission ends in one outcome; the value doubles as a metric label."""

from __future__ import annotations

import enum


class Outcome(str, enum.Enum):
    COMPLETED = "completed"
    REJECTED_INVALID = "rejected_invalid"
    REJECTED_OVERLOAD = "rejected_overload"
    REJECTED_NO_REPLICA = "rejected_no_replica"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"
