"""A Serve request router that sends a request to the replica the queue manager chose.

The queue manager's assignment names a replica by its Serve unique id; the ingress passes
it as the ``target_replica`` keyword of the call, which Serve exposes to routers in
``pending_request.kwargs``.  If that replica is gone (it died between assignment and
call), any live replica of the deployment takes the request rather than losing it.
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

TARGET_KWARG = "target_replica"


class AssignedReplicaRouter(RequestRouter):
    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is None:
            return [candidate_replicas]
        # Without backoff the base class retries a full replica in a tight loop.
        pending_request.routing_context.should_backoff = True
        target = pending_request.kwargs.get(TARGET_KWARG)
        if target is not None:
            for replica in candidate_replicas:
                if replica.replica_id.unique_id == target:
                    return [[replica]]
        return [candidate_replicas]
