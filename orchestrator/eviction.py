"""QLM's request eviction, as one plain decision: which requests to take back from the
replicas that hold them but have not started them."""

from __future__ import annotations

import math
from collections.abc import Iterable

from orchestrator.fleet import ReplicaState
from orchestrator.ledger import InFlightLedger

#: A request dispatched less than this long ago is never evicted (its replica may simply
#: not have reported it started yet).
MIN_AGE_S = 0.5


def choose_evictions(replicas: Iterable[ReplicaState], ledger: InFlightLedger,
                     models_with_queue: set[str], now_s: float,
                     overhead_s: float) -> list[tuple[str, str]]:
    """(replica id, request id) pairs to evict.  A request qualifies when it has not
    started where it is, its deadline is finite, it was not evicted before, its estimated
    first token there (the engine's waiting requests ahead, a slot release each, then its
    prefill) misses the deadline, and another replica of its model with room now makes it
    (overhead + prefill), while no queued request of that model would take that room."""
    replicas = list(replicas)
    spare = {r.replica_id: (r.stats.limits.max_in_flight - r.num_holding) if r.has_room() else 0
             for r in replicas}
    out: list[tuple[str, str]] = []
    for r in replicas:
        if r.model in models_with_queue:
            continue
        for request_id in r.stats.unstarted_request_ids:
            dispatch = ledger.get(request_id)
            if dispatch is None or dispatch.replica_id != r.replica_id:
                continue  # not (or no longer) held here
            request, since = dispatch.request, dispatch.since_s
            if (now_s - since < MIN_AGE_S
                    or math.isinf(request.deadline_s) or request.evicted):
                continue
            here = (now_s + r.speed.slot_free_s() * max(1, r.stats.num_waiting)
                    + r.speed.prefill_s(request.num_prompt_tokens))
            if here <= request.deadline_s:
                continue
            for other in sorted(replicas, key=lambda o: o.speed.prefill_s(request.num_prompt_tokens)):
                if (other is r or other.model != r.model or spare[other.replica_id] <= 0
                        or request.avoid_replica == other.replica_id):
                    continue
                there = now_s + overhead_s + other.speed.prefill_s(request.num_prompt_tokens)
                if there <= request.deadline_s:
                    spare[other.replica_id] -= 1
                    out.append((r.replica_id, request_id))
                    break
    return out
