"""The global queue's durable store: every accepted request is recorded before it is
acknowledged, so that a restarted queue manager recovers every unfinished request.

Lifecycle of a record: :meth:`QueueStore.put` (state ``queued``, awaited before the
acknowledgement) → :meth:`~QueueStore.dispatched` / :meth:`~QueueStore.requeued` (state
changes, written in the background) → :meth:`~QueueStore.finished` (record deleted, a
done-marker with the outcome kept ``done_ttl_s`` for idempotent retries).  After a restart,
:meth:`~QueueStore.load` returns the unfinished records in admission order.

Two implementations behind one factory, :func:`make_store`:

- :class:`MemoryStore` keeps records in the process: nothing survives a restart.
- :class:`~orchestrator.store_redis.RedisStore` writes to Redis; its key layout, the
  background outbox and the fencing of late writes are described in
  :mod:`orchestrator.store_redis`.

The stored payload is ``pickle.dumps(QueuedRequest)``.  Unpickling runs code chosen by
whoever can write the keys, so Redis must be trusted infrastructure (a private instance
or ACL-protected, never shared with untrusted clients).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from pydantic import Field

from augserve_common.redis_url import RedisUrlSource
from augserve_common.strict import StrictModel
from orchestrator.queued import QueuedRequest

logger = logging.getLogger(__name__)

RECORD_STATES: tuple[str, ...] = ("queued", "dispatched")


class StoreConfig(StrictModel, RedisUrlSource):
    """Where the global queue records accepted requests."""

    redis_url: str | None = Field(
        None, description="Redis URL (redis://, rediss:// or unix://) of the durable store; "
        "None keeps records in memory only (lost when the queue manager restarts).")
    key_prefix: str = Field(
        "augserve:queue", min_length=1, description="Prefix of every Redis key the store "
        "writes; use a hash tag such as '{augserve:queue}' on Redis Cluster.")
    write_timeout_s: float = Field(
        0.5, gt=0, description="Longest wait for one Redis write (connect included); a "
        "required put that takes longer fails with StoreUnavailableError.")
    flush_interval_s: float = Field(
        0.05, gt=0, description="Period of the background writer that flushes state "
        "changes (dispatched, requeued, finished) and best-effort puts to Redis.")
    done_ttl_s: float = Field(
        600.0, gt=0, description="How long a finished request's outcome is remembered, "
        "so that a retry with the same request id gets the same outcome.")


class StoreUnavailableError(Exception):
    """The durable store could not take a write in time."""


class RequestAlreadyFinishedError(Exception):
    """A put for a request id that finished within ``done_ttl_s``: nothing was recorded;
    answer the retry with ``outcome``."""

    def __init__(self, request_id: str, outcome: str) -> None:
        super().__init__(f"request {request_id!r} already finished: {outcome}")
        self.request_id = request_id
        self.outcome = outcome

    def __reduce__(self):  # keep the fields across pickling (Ray)
        return (type(self), (self.request_id, self.outcome))


@dataclass(frozen=True, slots=True)
class StoredRequest:
    """One unfinished request as recorded: queued, or dispatched to a replica."""

    request: QueuedRequest
    state: str
    replica_id: str | None = None
    deployment: str | None = None
    gpu_class: str | None = None

    def __post_init__(self) -> None:
        assert self.state in RECORD_STATES, self.state

    @property
    def order_key(self) -> tuple[float, int]:
        """Admission order: arrival time, then sequence number."""
        return (self.request.enqueued_s, self.request.seq)


class QueueStore(ABC):
    """Records accepted requests so that a restarted queue manager can recover them.

    ``put`` is awaited before a request is acknowledged; state changes are non-blocking and
    written in the background, in order per request id.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.corrupt_entries_ignored = 0

    @property
    @abstractmethod
    def durable(self) -> bool:
        """True while writes reach durable storage (Redis connected, outbox empty)."""

    async def start(self) -> None:
        """Connect; never raises because Redis is down (reconnects in the background)."""

    @abstractmethod
    async def put(self, request: QueuedRequest, *, required: bool) -> bool:
        """Record an accepted request before it is acknowledged.  Returns True when it was
        written durably.  ``required=True``: on failure or timeout raise
        :class:`StoreUnavailableError` (nothing is recorded).  ``required=False``: on
        failure keep it in the outbox (written when Redis returns) and return False.
        Raises :class:`RequestAlreadyFinishedError` for an id finished within
        ``done_ttl_s``."""

    @abstractmethod
    def dispatched(self, request_id: str, replica_id: str, deployment: str,
                   gpu_class: str) -> None:
        """The request left the queue for a replica (non-blocking)."""

    @abstractmethod
    def requeued(self, request_id: str) -> None:
        """Back to state queued (evicted, retried); keeps its original admission order."""

    @abstractmethod
    def finished(self, request_id: str, outcome: str) -> None:
        """Delete the record; remember ``outcome`` for ``done_ttl_s`` (non-blocking)."""

    async def flush(self) -> None:
        """Write pending changes now (the store also does it by itself)."""

    @abstractmethod
    async def load(self) -> list[StoredRequest]:
        """Every unfinished request, in admission order (``enqueued_s``, then ``seq``).
        Corrupt entries are skipped with a warning and counted in
        ``corrupt_entries_ignored``."""

    @abstractmethod
    async def done_outcome(self, request_id: str) -> str | None:
        """The outcome of a request finished within ``done_ttl_s`` (idempotency), else
        None."""

    @abstractmethod
    def stats(self) -> dict[str, float]:
        """``connected`` (0/1), ``outbox_len``, ``nondurable_puts_total``,
        ``write_failures_total``, ``corrupt_entries_ignored``."""

    async def close(self) -> None:
        """Write what can be written within the timeout and disconnect."""


class MemoryStore(QueueStore):
    """Records in a dict of this process: state changes and idempotency work while the
    process lives; a new instance (a restarted queue manager) starts empty."""

    name = "memory"

    def __init__(self, config: StoreConfig | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._done_ttl_s = (config or StoreConfig()).done_ttl_s
        self._clock = clock
        self._records: dict[str, StoredRequest] = {}
        #: request id -> (outcome, expiry on ``clock``); insertion order = expiry order.
        self._done: dict[str, tuple[str, float]] = {}
        self._nondurable_puts = 0

    @property
    def durable(self) -> bool:
        return False

    async def put(self, request: QueuedRequest, *, required: bool) -> bool:
        if required:
            raise StoreUnavailableError("durability is required but no redis_url is configured")
        outcome = await self.done_outcome(request.request_id)
        if outcome is not None:
            raise RequestAlreadyFinishedError(request.request_id, outcome)
        self._records[request.request_id] = StoredRequest(request, "queued")
        self._nondurable_puts += 1
        return False

    def dispatched(self, request_id: str, replica_id: str, deployment: str,
                   gpu_class: str) -> None:
        self._update(request_id, "dispatched", replica_id, deployment, gpu_class)

    def requeued(self, request_id: str) -> None:
        self._update(request_id, "queued", None, None, None)

    def _update(self, request_id: str, state: str, replica_id: str | None,
                deployment: str | None, gpu_class: str | None) -> None:
        record = self._records.get(request_id)
        if record is None:
            logger.debug("queue store: %s for unknown request %s ignored", state, request_id)
            return
        self._records[request_id] = replace(record, state=state, replica_id=replica_id,
                                            deployment=deployment, gpu_class=gpu_class)

    def finished(self, request_id: str, outcome: str) -> None:
        self._records.pop(request_id, None)
        self._expire_done()
        self._done.pop(request_id, None)
        self._done[request_id] = (outcome, self._clock() + self._done_ttl_s)

    def _expire_done(self) -> None:
        now = self._clock()
        while self._done:
            oldest = next(iter(self._done))
            if self._done[oldest][1] > now:
                break
            del self._done[oldest]

    async def load(self) -> list[StoredRequest]:
        return sorted(self._records.values(), key=lambda r: r.order_key)

    async def done_outcome(self, request_id: str) -> str | None:
        self._expire_done()
        done = self._done.get(request_id)
        return None if done is None else done[0]

    def stats(self) -> dict[str, float]:
        return {"connected": 0.0, "outbox_len": 0.0,
                "nondurable_puts_total": float(self._nondurable_puts),
                "write_failures_total": 0.0,
                "corrupt_entries_ignored": float(self.corrupt_entries_ignored)}


class RateLimitedLog:
    """Logs a warning at most once per ``interval_s``, counting the ones it held back
    (an outage must not produce one line per request)."""

    def __init__(self, log: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval_s = interval_s
        self._clock = clock
        self._next_s = float("-inf")
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = self._clock()
        if now < self._next_s:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += " (%d similar warnings suppressed)"
            args = (*args, self._suppressed)
        self._log.warning(msg, *args)
        self._next_s = now + self._interval_s
        self._suppressed = 0


def make_store(config: StoreConfig) -> QueueStore:
    """The Redis store when ``redis_url`` is set, else the memory store."""
    if config.redis_url is None:
        return MemoryStore(config)
    from orchestrator.store_redis import RedisStore  # imports redis only when used
    return RedisStore(config)
