"""Typed errors at the service boundary.  Each carries its HTTP status and OpenAI error
fields; overload-like errors carry ``retry_after_s``.  They are plain picklable exceptions,
so they survive crossing Ray processes (Ray re-raises them as instances of the same type)."""

from __future__ import annotations

from typing import Any, ClassVar

from orchestrator.outcomes import Outcome


class AugserveError(Exception):
    """Base of every error that becomes an OpenAI-style JSON error response."""

    status_code: int = 500
    error_type: str = "internal_error"
    code: str | None = None
    #: The admission outcome this error means (metric label); None: by status code.
    outcome: ClassVar[Outcome | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after_s = retry_after_s

    def __reduce__(self):  # keep keyword fields across pickling
        return (_rebuild, (type(self), self.message, self.param, self.code, self.retry_after_s))

    def to_body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": self.param, "code": self.code}}

    def admission_outcome(self) -> Outcome:
        """The outcome of a request refused (or failed) with this error."""
        if self.outcome is not None:
            return self.outcome
        return Outcome.REJECTED_INVALID if self.status_code < 500 else Outcome.FAILED

    def headers(self) -> dict[str, str]:
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(max(1, int(round(self.retry_after_s))))}


def _rebuild(cls: type[AugserveError], message: str, param: str | None, code: str | None,
             retry_after_s: float | None) -> AugserveError:
    return cls(message, param=param, code=code, retry_after_s=retry_after_s)


class InvalidRequestError(AugserveError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_value"


class ToolCallFailedError(AugserveError):
    """A server-side tool configured with ``on_error: fail`` failed or timed out."""

    status_code = 502
    error_type = "api_error"
    code = "tool_failed"


class ModelNotFoundError(AugserveError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class NotFoundError(AugserveError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class PayloadTooLargeError(AugserveError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "payload_too_large"


class OverloadedError(AugserveError):
    """The global queue is full: retry later."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"
    outcome = Outcome.REJECTED_OVERLOAD


class SLOUnattainableError(AugserveError):
    """No placement is estimated to meet the request's SLO and its class rejects."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "slo_unattainable"
    outcome = Outcome.REJECTED_SLO


class DuplicateRequestError(AugserveError):
    """An X-Request-Id that is in progress or finished recently."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "duplicate_request_id"


class DeadlineExceededError(AugserveError):
    """The request's SLO deadline passed while it was queued (its class expires)."""

    status_code = 504
    error_type = "timeout_error"
    code = "slo_deadline_exceeded"
    outcome = Outcome.EXPIRED


class DurabilityUnavailableError(AugserveError):
    """Durability is required and the durable store cannot take the request now."""

    status_code = 503
    error_type = "service_unavailable"
    code = "durability_unavailable"
    outcome = Outcome.REJECTED_UNDURABLE


class NoHealthyReplicaError(AugserveError):
    status_code = 503
    error_type = "service_unavailable"
    code = "no_healthy_replica"
    outcome = Outcome.REJECTED_NO_REPLICA


class QueueTimeoutError(AugserveError):
    status_code = 503
    error_type = "service_unavailable"
    code = "queue_timeout"
    outcome = Outcome.EXPIRED


class QueueUnavailableError(AugserveError):
    """The queue manager could not be reached (it is restarting)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "queue_unavailable"


class ReplicaFailedError(AugserveError):
    """The replica serving a request failed before the request finished."""

    status_code = 503
    error_type = "service_unavailable"
    code = "replica_failed"


class InternalError(AugserveError):
    status_code = 500
    error_type = "internal_error"
    code = "internal_error"
