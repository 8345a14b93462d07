"""The queue store in Redis (``redis.asyncio``).

Keys (``P`` = ``key_prefix``, ``I`` = a request id):

- ``P:req:I`` — hash: ``payload`` (the pickled ``QueuedRequest``), ``state`` (``queued`` or
  ``dispatched``), ``replica_id``, ``deployment``, ``gpu_class`` (``""`` = none), ``token``
  (the acceptance attempt) and ``version`` (of the last write applied);
- ``P:order`` — sorted set, score = ``enqueued_s`` (unix seconds), member = ``I``: the
  admission order that :meth:`RedisStore.load` returns (ties broken by ``seq``);
- ``P:done:I`` — the outcome of a finished request, expiring after ``done_ttl_s``
  (idempotent retries; also stops a late write from resurrecting a finished request);
- ``P:void:I`` — set of tokens of required puts that failed, expiring after
  ``done_ttl_s``: their client was told "unavailable", so a copy of that write that the
  server executes late (a timed-out write is not necessarily a lost one) must not survive.

Writes.  ``put`` is one Lua script (atomic, as MULTI/EXEC): it refuses when the request
finished within ``done_ttl_s`` or its token was voided, else replaces the hash and adds the
id to ``P:order``; it is awaited with ``write_timeout_s``.  State changes
(``dispatched``, ``requeued``, ``finished``), best-effort puts that could not be written and
the voiding of failed required puts go into the outbox (:mod:`orchestrator.store_outbox`):
coalesced per request id, written in MULTI/EXEC batches by a background task right after
they are added and then at most every ``flush_interval_s``, kept and retried with a capped
backoff while Redis is down.  Every record write carries a version that increases per
store; a state change applies only to an existing record with an older version, and
``finished`` deletes the hash and the order entry and sets the done-marker.  So the order
per request id holds even when a timed-out write reaches the server late.

Loading reads ``P:order`` with scores, then each hash, done-marker and void set in
pipelines; records that finished or were voided are deleted silently, order entries
without a hash and unreadable records are deleted and counted as corrupt.

Connection.  redis-py reconnects per command; connect and socket timeouts are
``write_timeout_s`` with one immediate retry, so a down server fails an operation within
about ``write_timeout_s``.  After a failure, best-effort puts go straight to the outbox (no
waiting per request) until the background task reaches Redis again (PING, backoff capped at
1 s).  ``durable`` is true while connected with an empty outbox.  A Redis that restarts
without persistence loses the records it held: run Redis with AOF for real durability.
On Redis Cluster, give ``key_prefix`` a hash tag (``{augserve:queue}``): scripts touch
several keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import pickle
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from augserve_common.redis_url import redacted
from orchestrator import store_compat
from orchestrator.queued import QueuedRequest
from orchestrator.store import (
    RECORD_STATES,
    QueueStore,
    RateLimitedLog,
    RequestAlreadyFinishedError,
    StoreConfig,
    StoredRequest,
    StoreUnavailableError,
)
from orchestrator.store_outbox import Outbox, PendingWrite

logger = logging.getLogger(__name__)

_FAILURES = (RedisError, OSError, TimeoutError)
_MAX_BACKOFF_S = 1.0
_BATCH_WRITES = 256
_LOAD_CHUNK = 500

# KEYS: req, order, done, void.  ARGV: id, token, version, score, payload, state,
# replica_id, deployment, gpu_class.  Returns the outcome if finished, 2 if voided, else 1.
_PUT_LUA = """
local done = redis.call('GET', KEYS[3])
if done then return done end
if redis.call('SISMEMBER', KEYS[4], ARGV[2]) == 1 then return 2 end
local stored = tonumber(redis.call('HGET', KEYS[1], 'version'))
if stored and stored >= tonumber(ARGV[3]) then return 1 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'payload', ARGV[5], 'state', ARGV[6], 'replica_id', ARGV[7],
           'deployment', ARGV[8], 'gpu_class', ARGV[9], 'token', ARGV[2], 'version', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 1
"""
# KEYS: req.  ARGV: version, state, replica_id, deployment, gpu_class.
_UPDATE_LUA = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'version'))
if not stored or stored >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'replica_id', ARGV[3], 'deployment', ARGV[4],
           'gpu_class', ARGV[5], 'version', ARGV[1])
return 1
"""
# KEYS: req, order, void.  ARGV: id, token, ttl_ms.
_VOID_LUA = """
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if redis.call('HGET', KEYS[1], 'token') == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1
"""


class RedisStore(QueueStore):
    """Records in Redis, state changes through a coalescing outbox (module docstring).
    Not thread-safe: use it from the event loop that awaited :meth:`start`."""

    name = "redis"

    def __init__(self, config: StoreConfig) -> None:
        super().__init__()
        assert config.redis_url is not None, "RedisStore needs redis_url"
        self.config = config
        self._order_key = f"{config.key_prefix}:order"
        self._ttl_ms = max(1, int(config.done_ttl_s * 1000))
        self._redis: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._outbox = Outbox()
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._connected = False
        self._version = 0
        self._nondurable_puts = 0
        self._write_failures = 0
        self._warn = RateLimitedLog(logger)

    # -- keys and versions ------------------------------------------------------------
    def _key(self, kind: str, request_id: str) -> str:
        return f"{self.config.key_prefix}:{kind}:{request_id}"

    def _next_version(self) -> int:
        """Increasing per store, and across restarts (microseconds of wall time; exact
        in a Lua number)."""
        self._version = max(self._version + 1, int(time.time() * 1_000_000))
        return self._version

    @property
    def _client(self) -> Redis:
        assert self._redis is not None, "RedisStore.start() was not awaited"
        return self._redis

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        if self._redis is not None:
            return
        timeout_s = self.config.write_timeout_s
        self._redis = Redis.from_url(
            self.config.redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1))
        try:
            await asyncio.wait_for(self._redis.ping(), timeout_s)
            self._mark_up()
        except _FAILURES as exc:
            self._mark_down("connect", exc)
        self._task = asyncio.create_task(self._run(), name="queue-store-flusher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._redis is None:
            return
        if self._outbox:
            await self._flush_all()
        if self._outbox:
            logger.warning("queue store: closing with %d unwritten changes", len(self._outbox))
        await self._redis.aclose()
        self._redis = None

    @property
    def durable(self) -> bool:
        return self._connected and not self._outbox

    def stats(self) -> dict[str, float]:
        return {"connected": float(self._connected), "outbox_len": float(len(self._outbox)),
                "nondurable_puts_total": float(self._nondurable_puts),
                "write_failures_total": float(self._write_failures),
                "corrupt_entries_ignored": float(self.corrupt_entries_ignored)}

    def _mark_up(self) -> None:
        if not self._connected:
            logger.info("queue store: redis reachable at %s", redacted(self.config.redis_url))
        self._connected = True

    def _mark_down(self, what: str, exc: BaseException) -> None:
        self._connected = False
        self._warn.warning("queue store: redis %s failed (%s: %s); %d changes pending",
                           what, type(exc).__name__, exc, len(self._outbox))

    def _write_failed(self, what: str, exc: BaseException) -> None:
        self._write_failures += 1
        self._mark_down(what, exc)

    # -- writes -----------------------------------------------------------------------
    async def put(self, request: QueuedRequest, *, required: bool) -> bool:
        request_id = request.request_id
        if not math.isfinite(request.enqueued_s):
            raise ValueError(f"request {request_id}: enqueued_s must be finite")
        outcome = self._outbox.pending_outcome(request_id)
        if outcome is not None:
            raise RequestAlreadyFinishedError(request_id, outcome)
        payload = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
        version, token = self._next_version(), uuid.uuid4().hex
        if not required and not self._connected:
            return self._defer_put(request, version, payload, token)
        write = PendingWrite(request_id, version, state="queued")
        try:
            result = await asyncio.wait_for(
                self._eval_put(self._client, write, payload, request.enqueued_s, token),
                self.config.write_timeout_s)
        except _FAILURES as exc:
            self._write_failed("put", exc)
            if not required:
                return self._defer_put(request, version, payload, token)
            self._outbox.void(request_id, version, token)
            self._wake.set()
            raise StoreUnavailableError(
                f"redis did not record request {request_id} within "
                f"{self.config.write_timeout_s} s ({type(exc).__name__}: {exc})") from exc
        self._mark_up()
        if isinstance(result, bytes):
            raise RequestAlreadyFinishedError(request_id, result.decode())
        return True

    def _defer_put(self, request: QueuedRequest, version: int, payload: bytes,
                   token: str) -> bool:
        self._outbox.put(request.request_id, version, payload, request.enqueued_s, token)
        self._nondurable_puts += 1
        self._wake.set()
        return False

    def dispatched(self, request_id: str, replica_id: str, deployment: str,
                   gpu_class: str) -> None:
        self._outbox.update(request_id, self._next_version(), "dispatched", replica_id,
                            deployment, gpu_class)
        self._wake.set()

    def requeued(self, request_id: str) -> None:
        self._outbox.update(request_id, self._next_version(), "queued")
        self._wake.set()

    def finished(self, request_id: str, outcome: str) -> None:
        self._outbox.finish(request_id, self._next_version(), outcome)
        self._wake.set()

    def _eval_put(self, client: Redis | Pipeline, write: PendingWrite, payload: bytes,
                  enqueued_s: float, token: str) -> Any:
        rid = write.request_id
        return client.eval(_PUT_LUA, 4, self._key("req", rid), self._order_key,
                           self._key("done", rid), self._key("void", rid),
                           rid, token, write.version, repr(enqueued_s), payload, write.state,
                           write.replica_id or "", write.deployment or "",
                           write.gpu_class or "")

    def _queue_write(self, pipe: Pipeline, write: PendingWrite) -> int:
        """Add the commands of one pending write to ``pipe``; returns how many."""
        rid = write.request_id
        req_key = self._key("req", rid)
        for token in write.void_tokens:
            pipe.eval(_VOID_LUA, 3, req_key, self._order_key, self._key("void", rid),
                      rid, token, self._ttl_ms)
        n = len(write.void_tokens)
        if write.outcome is not None:
            pipe.delete(req_key)
            pipe.zrem(self._order_key, rid)
            pipe.set(self._key("done", rid), write.outcome, px=self._ttl_ms)
            return n + 3
        if write.put is not None:
            self._eval_put(pipe, write, write.put.payload, write.put.enqueued_s,
                           write.put.token)
            return n + 1
        if write.state is not None:
            pipe.eval(_UPDATE_LUA, 1, req_key, write.version, write.state,
                      write.replica_id or "", write.deployment or "", write.gpu_class or "")
            n += 1
        return n

    async def _write_batch(self, batch: list[PendingWrite]) -> list[PendingWrite]:
        """Write ``batch`` in one MULTI/EXEC; returns the writes Redis answered with an
        error."""
        pipe = self._client.pipeline(transaction=True)
        counts = [self._queue_write(pipe, write) for write in batch]
        results = await pipe.execute(raise_on_error=False)
        failed, start = [], 0
        for write, count in zip(batch, counts):
            errors = [r for r in results[start:start + count] if isinstance(r, Exception)]
            if errors:
                self._warn.warning("queue store: redis refused a write of %s: %s",
                                   write.request_id, errors[0])
                failed.append(write)
            start += count
        return failed

    async def _flush_all(self) -> bool:
        """Write the whole outbox (or, when it is empty and Redis was down, probe it);
        False when Redis could not take it."""
        async with self._flush_lock:
            if not self._outbox:
                if self._connected:
                    return True
                try:
                    await asyncio.wait_for(self._client.ping(), self.config.write_timeout_s)
                except _FAILURES as exc:
                    self._mark_down("ping", exc)
                    return False
                self._mark_up()
                return True
            while self._outbox:
                batch = self._outbox.take(_BATCH_WRITES)
                failed = batch
                try:
                    failed = await asyncio.wait_for(self._write_batch(batch),
                                                    self.config.write_timeout_s)
                except _FAILURES as exc:
                    self._write_failed("write", exc)
                    return False
                finally:
                    self._outbox.restore(failed)
                self._mark_up()
                if failed:
                    self._write_failures += 1
                    return False
            return True

    async def flush(self) -> None:
        if not await self._flush_all():
            raise StoreUnavailableError(
                f"redis unavailable: {len(self._outbox)} changes still pending")

    async def _run(self) -> None:
        """Background writer: flush when changes arrive, at most every flush_interval_s;
        retry with a capped backoff while Redis is down."""
        backoff_s = self.config.flush_interval_s
        while True:
            if self._connected and not self._outbox:
                await self._wake.wait()
            self._wake.clear()
            try:
                ok = await self._flush_all()
            except Exception:
                logger.exception("queue store: flush failed")
                ok = False
            if ok:
                backoff_s = self.config.flush_interval_s
                await asyncio.sleep(self.config.flush_interval_s)
            else:
                await asyncio.sleep(backoff_s)
                backoff_s = min(2 * backoff_s, max(_MAX_BACKOFF_S, self.config.flush_interval_s))

    # -- reads ------------------------------------------------------------------------
    async def done_outcome(self, request_id: str) -> str | None:
        """Raises :class:`StoreUnavailableError` when Redis does not answer in time."""
        outcome = self._outbox.pending_outcome(request_id)
        if outcome is not None:
            return outcome
        try:
            value = await asyncio.wait_for(self._client.get(self._key("done", request_id)),
                                           self.config.write_timeout_s)
        except _FAILURES as exc:
            self._mark_down("read", exc)
            raise StoreUnavailableError(f"redis unavailable: {exc}") from exc
        self._mark_up()
        return None if value is None else value.decode()

    async def load(self) -> list[StoredRequest]:
        """Raises :class:`StoreUnavailableError` when Redis is unreachable."""
        await self.flush()
        try:
            members = await self._client.zrange(self._order_key, 0, -1, withscores=True)
            records: list[StoredRequest] = []
            stale: list[str] = []
            corrupt: list[tuple[str, str]] = []
            for start in range(0, len(members), _LOAD_CHUNK):
                ids = [m.decode() for m, _ in members[start:start + _LOAD_CHUNK]]
                await self._load_chunk(ids, records, stale, corrupt)
            await self._delete(stale + [rid for rid, _ in corrupt])
        except _FAILURES as exc:
            self._mark_down("load", exc)
            raise StoreUnavailableError(f"redis unavailable while loading: {exc}") from exc
        if corrupt:
            self.corrupt_entries_ignored += len(corrupt)
            logger.warning("queue store: ignored and deleted %d corrupt entries, e.g. %s",
                           len(corrupt), corrupt[:5])
        records.sort(key=lambda r: r.order_key)
        return records

    async def _load_chunk(self, ids: list[str], records: list[StoredRequest],
                          stale: list[str], corrupt: list[tuple[str, str]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for rid in ids:
            pipe.hgetall(self._key("req", rid))
            pipe.exists(self._key("done", rid))
            pipe.smembers(self._key("void", rid))
        results = await pipe.execute()
        for i, rid in enumerate(ids):
            fields, done, voids = results[3 * i:3 * i + 3]
            if not fields:
                corrupt.append((rid, "order entry without a record"))
            elif done or fields.get(b"token") in voids:
                stale.append(rid)
            else:
                try:
                    records.append(self._decode(rid, fields))
                except Exception as exc:  # noqa: BLE001 - any unreadable entry is skipped
                    corrupt.append((rid, f"{type(exc).__name__}: {exc}"))

    def _decode(self, request_id: str, fields: dict[bytes, bytes]) -> StoredRequest:
        request = store_compat.loads(fields[b"payload"])  # the previous layout too
        if not isinstance(request, QueuedRequest) or request.request_id != request_id:
            raise ValueError(f"payload is not the QueuedRequest {request_id}")
        state = fields[b"state"].decode()
        if state not in RECORD_STATES:
            raise ValueError(f"unknown state {state!r}")
        self._version = max(self._version, int(fields[b"version"]))
        text = {k: fields.get(k.encode(), b"").decode() or None
                for k in ("replica_id", "deployment", "gpu_class")}
        return StoredRequest(request, state, **text)

    async def _delete(self, request_ids: list[str]) -> None:
        for start in range(0, len(request_ids), _LOAD_CHUNK):
            chunk = request_ids[start:start + _LOAD_CHUNK]
            pipe = self._client.pipeline(transaction=False)
            for rid in chunk:
                pipe.delete(self._key("req", rid))
            pipe.zrem(self._order_key, *chunk)
            await pipe.execute()
