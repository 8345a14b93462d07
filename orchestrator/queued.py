"""The queue's view of a request: its header (shared with the replica's view), its sizes
(no prompt tokens: the queue is control plane) and the queue's own state."""

from __future__ import annotations

import math
from dataclasses import dataclass

from replicas.types import HeaderFields, RequestHeader

#: The group of requests that gave explicit targets rather than a class name.
CUSTOM_SLO_GROUP = "custom"
NO_SLO_GROUP = "none"


@dataclass(eq=False, slots=True)
class QueuedRequest(HeaderFields):
    """A request waiting in (or dispatched from) the global queue."""

    header: RequestHeader
    num_prompt_tokens: int
    max_tokens: int
    #: Generation turns of an augmented request (1 for a plain one) and their predicted
    #: API time: the estimator's service time.
    num_turns: int = 1
    api_time_s: float = 0.0
    #: Set by the dispatcher at admission.
    enqueued_s: float = 0.0
    seq: int = 0
    deadline_s: float = math.inf
    predicted_tokens: float = 0.0
    predicted_var_tokens: float = 0.0
    #: Admitted although the estimate said its SLO would be missed (class rule best_effort).
    best_effort: bool = False
    #: Set by a QLM pass: the estimate says it misses its deadline even if served next.
    late: bool = False
    #: Handed back by the replica it was assigned to (eviction; once per request).
    evicted: bool = False
    #: A replica not to place it on again (it failed or evicted it there), while another
    #: healthy one serves its model.
    avoid_replica: str | None = None
    #: The estimator's waiting time at admission (scored against the real wait).
    est_wait_s: float | None = None
    #: Where a request recovered from the store was dispatched before the restart (the
    #: replica may not have reported yet).
    recovered_deployment: str = ""
    recovered_gpu_class: str = ""
    #: The queue policy's number for this request's current heap entry (0: not queued):
    #: an entry whose number differs is stale (the request left, or was queued again).
    queue_entry: int = 0

    @property
    def slo_class(self) -> str:
        slo = self.header.slo
        if slo is None:
            return NO_SLO_GROUP
        return slo.class_name or CUSTOM_SLO_GROUP

    @property
    def group(self) -> tuple[str, str]:
        """The request group: (model, SLO class)."""
        return (self.header.model, self.slo_class)
