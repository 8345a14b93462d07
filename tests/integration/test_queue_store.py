"""The Redis queue store against a real ``redis-server`` (no Ray): a new store instance
stands for a restarted queue manager; outages are a stopped or a paused (SIGSTOP) server."""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from benchmarks.client_capacity import free_port
from orchestrator.queued import QueuedRequest
from orchestrator.store import (
    RequestAlreadyFinishedError,
    StoreConfig,
    StoreUnavailableError,
)
from orchestrator.store_redis import RedisStore
from replicas.types import RequestHeader
from tests.integration.predictor_procs import RedisProcess

pytestmark = pytest.mark.integration

WRITE_TIMEOUT_S = 0.5


def req(i: int, enqueued_s: float | None = None, seq: int | None = None) -> QueuedRequest:
    return QueuedRequest(RequestHeader(f"r{i}", "tiny"), num_prompt_tokens=10, max_tokens=20,
                         enqueued_s=1_700_000_000.0 + i if enqueued_s is None else enqueued_s,
                         seq=i if seq is None else seq, avoid_replica=f"x{i}", est_wait_s=float(i))


@pytest.fixture
def redis_procs(tmp_path: Path) -> Iterator[Callable[..., RedisProcess]]:
    """Start redis-server processes (by default on a new port); all stopped at the end."""
    started: list[RedisProcess] = []

    def start(port: int | None = None) -> RedisProcess:
        proc = RedisProcess(port or free_port(), tmp_path / "redis")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGCONT)
            proc.stop()


@pytest.fixture
async def stores() -> AsyncIterator[Callable[[str], RedisStore]]:
    """Make started stores (``await make(url)``); all closed at the end."""
    made: list[RedisStore] = []
    prefix = f"test:{os.getpid()}:{time.monotonic_ns()}"

    async def make(url: str) -> RedisStore:
        store = RedisStore(StoreConfig(redis_url=url, key_prefix=prefix,
                                       write_timeout_s=WRITE_TIMEOUT_S, flush_interval_s=0.01))
        await store.start()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def wait_durable(store: RedisStore, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not store.durable:
        assert time.monotonic() < deadline, store.stats()
        await asyncio.sleep(0.05)


def summary(loaded) -> list[tuple[str, str, str | None]]:
    return [(s.request.request_id, s.state, s.replica_id) for s in loaded]


async def test_a_new_store_recovers_unfinished_requests_in_admission_order(redis_procs, stores):
    redis = redis_procs()
    store = await stores(redis.url)
    assert store.durable
    for i in (4, 2, 0, 1, 3):  # put out of admission order
        assert await store.put(req(i), required=True) is True
    store.dispatched("r1", "replica-7", "replica-large", "large")
    store.dispatched("r2", "replica-8", "replica-small", "small")
    store.requeued("r2")
    store.dispatched("r3", "replica-9", "replica-small", "small")
    store.finished("r3", "completed")
    await store.flush()

    loaded = await (await stores(redis.url)).load()
    assert summary(loaded) == [("r0", "queued", None), ("r1", "dispatched", "replica-7"),
                               ("r2", "queued", None), ("r4", "queued", None)]
    r1 = loaded[1]
    assert (r1.deployment, r1.gpu_class) == ("replica-large", "large")
    assert (r1.request.avoid_replica, r1.request.est_wait_s, r1.request.max_tokens) == ("x1", 1.0, 20)
    assert all(s.request.request_id != "r3" for s in loaded)


async def test_a_thousand_puts_keep_admission_order(redis_procs, stores):
    redis = redis_procs()
    store = await stores(redis.url)
    requests = [req(i, enqueued_s=1_700_000_000.0 + i // 4 * 0.001, seq=i) for i in range(1000)]
    shuffled = requests[:]
    random.Random(0).shuffle(shuffled)  # ties on enqueued_s are broken by seq
    for request in shuffled:
        await store.put(request, required=True)
    loaded = await (await stores(redis.url)).load()
    assert [s.request.request_id for s in loaded] == [r.request_id for r in requests]


async def test_done_outcome_is_remembered_across_stores(redis_procs, stores):
    redis = redis_procs()
    store = await stores(redis.url)
    await store.put(req(1), required=True)
    store.finished("r1", "completed")
    assert await store.done_outcome("r1") == "completed"  # from the outbox, before the flush
    await store.flush()
    restarted = await stores(redis.url)
    assert await restarted.done_outcome("r1") == "completed"
    assert await restarted.done_outcome("r2") is None
    with pytest.raises(RequestAlreadyFinishedError) as info:
        await restarted.put(req(1), required=True)
    assert info.value.outcome == "completed"
    assert await restarted.load() == []


async def test_corrupt_entries_are_skipped_counted_and_deleted(redis_procs, stores):
    redis = redis_procs()
    store = await stores(redis.url)
    await store.put(req(0), required=True)
    await store.put(req(1), required=True)
    prefix = store.config.key_prefix
    raw = redis.client()
    raw.hset(f"{prefix}:req:r1", "payload", b"not a pickle")
    raw.zadd(f"{prefix}:order", {"ghost": 1.0})  # no record
    raw.hset(f"{prefix}:req:bad", mapping={"payload": pickle.dumps({"x": 1}), "state": "queued",
                                           "version": 1, "token": "t"})
    raw.zadd(f"{prefix}:order", {"bad": 2.0})
    raw.close()

    restarted = await stores(redis.url)
    assert summary(await restarted.load()) == [("r0", "queued", None)]
    assert restarted.corrupt_entries_ignored == 3
    assert restarted.stats()["corrupt_entries_ignored"] == 3
    assert summary(await restarted.load()) == [("r0", "queued", None)]
    assert restarted.corrupt_entries_ignored == 3  # deleted: not counted twice


async def timed(coro) -> tuple[object, float]:
    started = time.monotonic()
    try:
        return await coro, time.monotonic() - started
    except StoreUnavailableError as exc:
        return exc, time.monotonic() - started


async def test_a_stopped_redis_fails_puts_fast_and_the_outbox_rewrites_after_restart(
        redis_procs, stores):
    redis = redis_procs()
    store = await stores(redis.url)
    await store.put(req(0), required=True)
    redis.stop()

    result, elapsed_s = await timed(store.put(req(1), required=True))
    assert isinstance(result, StoreUnavailableError) and elapsed_s < 3
    result, elapsed_s = await timed(store.put(req(2), required=False))
    assert result is False and elapsed_s < 3
    assert await store.put(req(3), required=False) is False
    assert not store.durable
    store.dispatched("r2", "replica-1", "replica-large", "large")
    store.dispatched("r0", "replica-2", "replica-large", "large")  # its record is lost
    store.finished("r3", "cancelled")
    assert store.stats()["connected"] == 0 and store.stats()["outbox_len"] == 4

    back = redis_procs(redis.port)  # same port, same directory, but empty (no persistence)
    await wait_durable(store)
    restarted = await stores(redis.url)
    assert summary(await restarted.load()) == [("r2", "dispatched", "replica-1")]
    raw = back.client()
    assert not raw.exists(f"{store.config.key_prefix}:req:r0")  # no stub from r0's change
    raw.close()
    assert await restarted.done_outcome("r3") == "cancelled"
    assert await store.put(req(4), required=True) is True  # works again, same store
    assert store.stats()["nondurable_puts_total"] == 2


async def test_a_paused_redis_loses_nothing_accepted(redis_procs, stores):
    redis = redis_procs()
    store = await stores(redis.url)
    for i in range(3):
        await store.put(req(i), required=True)
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        # r3 goes out on the pooled connection, so the paused server does get its write
        result, elapsed_s = await timed(store.put(req(3), required=True))
        assert isinstance(result, StoreUnavailableError) and elapsed_s < 3
        result, elapsed_s = await timed(store.put(req(4), required=False))
        assert result is False and elapsed_s < 3
        assert not store.durable
        store.dispatched("r0", "replica-1", "replica-large", "large")
        store.finished("r1", "completed")
        store.dispatched("r4", "replica-2", "replica-small", "small")
        await asyncio.sleep(2 * WRITE_TIMEOUT_S)  # the flusher's writes time out too
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    await wait_durable(store)
    await asyncio.sleep(0.2)  # let late copies of timed-out writes land

    restarted = await stores(redis.url)
    assert summary(await restarted.load()) == [("r0", "dispatched", "replica-1"),
                                               ("r2", "queued", None),
                                               ("r4", "dispatched", "replica-2")]
    # r3 was refused ("unavailable"): even if the paused server ran its write late, it
    # must not come back
    assert restarted.corrupt_entries_ignored == 0
    assert await restarted.done_outcome("r1") == "completed"


async def test_a_store_started_while_redis_is_down_catches_up(redis_procs, stores):
    port = free_port()
    store = await stores(f"redis://127.0.0.1:{port}/0")
    assert not store.durable
    assert await store.put(req(0), required=False) is False
    store.dispatched("r0", "replica-1", "replica-large", "large")
    redis_procs(port)
    await wait_durable(store)
    restarted = await stores(f"redis://127.0.0.1:{port}/0")
    assert summary(await restarted.load()) == [("r0", "dispatched", "replica-1")]


async def test_late_copies_of_old_writes_are_fenced(redis_procs, stores):
    """What a server does with a timed-out write that it executes late: an older state
    change, or a put of a finished request, changes nothing."""
    from orchestrator.store_outbox import PendingPut, PendingWrite

    redis = redis_procs()
    store = await stores(redis.url)
    await store.put(req(0), required=True)
    await store.put(req(1), required=True)
    old_version = store._next_version()
    store.dispatched("r0", "replica-new", "replica-large", "large")
    store.finished("r1", "completed")
    await store.flush()
    late = [PendingWrite("r0", old_version, state="dispatched", replica_id="replica-old"),
            PendingWrite("r1", old_version, state="dispatched", replica_id="replica-old"),
            PendingWrite("r1", old_version, state="queued",
                         put=PendingPut(pickle.dumps(req(1)), req(1).enqueued_s, "tok"))]
    assert await store._write_batch(late) == []
    restarted = await stores(redis.url)
    assert summary(await restarted.load()) == [("r0", "dispatched", "replica-new")]
    assert restarted.corrupt_entries_ignored == 0
