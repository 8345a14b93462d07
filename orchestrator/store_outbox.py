"""The Redis store's outbox: writes not yet confirmed by Redis, coalesced per request id.

Each request id has at most one :class:`PendingWrite`, the net effect of every change not
yet written: the latest state wins, ``finished`` is terminal (it drops an unwritten put and
any later state change), a put that never reached Redis carries the latest state with it.
Writes taken by the flusher and not confirmed are merged back *under* the changes made in
the meantime (:meth:`Outbox.restore`), so an old state never overwrites a newer one.  Every
change carries a version (increasing per store); Redis applies a record write only when
its version is newer than the stored one, which also fences late copies of timed-out
writes (see :mod:`orchestrator.store_redis`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PendingPut:
    """An accepted request whose record is not in Redis yet."""

    payload: bytes
    enqueued_s: float
    #: Identifies this acceptance attempt (fences a late copy of a voided attempt).
    token: str


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """The coalesced unwritten changes to one request's record."""

    request_id: str
    version: int
    #: The state to write ("queued" / "dispatched"); None: no state change pending.
    state: str | None = None
    replica_id: str | None = None
    deployment: str | None = None
    gpu_class: str | None = None
    put: PendingPut | None = None
    #: Set when the request finished: delete the record and leave the done-marker.
    outcome: str | None = None
    #: Tokens of required puts that failed: a late copy of them must not survive.
    void_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.put is None or self.state is not None, "a put carries its state"
        assert self.outcome is None or (self.put is None and self.state is None)


def merge(older: PendingWrite, newer: PendingWrite) -> PendingWrite:
    """The net effect of ``older`` followed by ``newer`` (same request id)."""
    assert older.request_id == newer.request_id
    voids = older.void_tokens + tuple(t for t in newer.void_tokens if t not in older.void_tokens)
    version = max(older.version, newer.version)
    outcome = newer.outcome if newer.outcome is not None else older.outcome
    if outcome is not None:
        return PendingWrite(newer.request_id, version, outcome=outcome, void_tokens=voids)
    put = newer.put if newer.put is not None else older.put
    latest = newer if newer.state is not None else older
    return PendingWrite(newer.request_id, version, state=latest.state,
                        replica_id=latest.replica_id, deployment=latest.deployment,
                        gpu_class=latest.gpu_class, put=put, void_tokens=voids)


class Outbox:
    """Unwritten changes by request id, in order of first change."""

    def __init__(self) -> None:
        self._pending: dict[str, PendingWrite] = {}

    def add(self, change: PendingWrite) -> None:
        current = self._pending.get(change.request_id)
        self._pending[change.request_id] = change if current is None else merge(current, change)

    def put(self, request_id: str, version: int, payload: bytes, enqueued_s: float,
            token: str) -> None:
        self.add(PendingWrite(request_id, version, state="queued",
                              put=PendingPut(payload, enqueued_s, token)))

    def update(self, request_id: str, version: int, state: str, replica_id: str | None = None,
               deployment: str | None = None, gpu_class: str | None = None) -> None:
        self.add(PendingWrite(request_id, version, state=state, replica_id=replica_id,
                              deployment=deployment, gpu_class=gpu_class))

    def finish(self, request_id: str, version: int, outcome: str) -> None:
        self.add(PendingWrite(request_id, version, outcome=outcome))

    def void(self, request_id: str, version: int, token: str) -> None:
        self.add(PendingWrite(request_id, version, void_tokens=(token,)))

    def take(self, max_writes: int) -> list[PendingWrite]:
        """Remove and return up to ``max_writes`` pending writes, oldest first."""
        taken = []
        for request_id in list(self._pending)[:max_writes]:
            taken.append(self._pending.pop(request_id))
        return taken

    def restore(self, writes: Iterable[PendingWrite]) -> None:
        """Put back writes that were taken but not confirmed, under any newer change."""
        for write in writes:
            newer = self._pending.pop(write.request_id, None)
            self._pending[write.request_id] = write if newer is None else merge(write, newer)

    def get(self, request_id: str) -> PendingWrite | None:
        return self._pending.get(request_id)

    def pending_outcome(self, request_id: str) -> str | None:
        write = self._pending.get(request_id)
        return None if write is None else write.outcome

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._pending

