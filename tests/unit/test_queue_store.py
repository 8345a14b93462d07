"""The queue store without Redis: the memory store, the config, the outbox's coalescing,
and the Redis store's behaviour when nothing listens at its address."""

from __future__ import annotations

import logging
import pickle
import time

import pytest
from pydantic import ValidationError

from benchmarks.client_capacity import free_port
from orchestrator.queued import QueuedRequest
from orchestrator.store import (
    MemoryStore,
    RateLimitedLog,
    RequestAlreadyFinishedError,
    StoreConfig,
    StoreUnavailableError,
    make_store,
)
from orchestrator.store_outbox import Outbox, PendingPut, PendingWrite, merge
from orchestrator.store_redis import RedisStore
from replicas.types import RequestHeader
from tests.unit.fakes import FakeClock


def req(i: int, enqueued_s: float = 100.0, seq: int | None = None) -> QueuedRequest:
    return QueuedRequest(RequestHeader(f"r{i}", "m"), num_prompt_tokens=10, max_tokens=10,
                         enqueued_s=enqueued_s, seq=i if seq is None else seq)


# -- config ------------------------------------------------------------------------------
def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValidationError):
        StoreConfig(redis_url="redis://x", durability="required")
    for bad in ({"write_timeout_s": 0}, {"flush_interval_s": -1}, {"done_ttl_s": 0},
                {"key_prefix": ""}, {"redis_url": "http://localhost:6379"}):
        with pytest.raises(ValidationError):
            StoreConfig(**bad)
    config = StoreConfig(redis_url="redis://127.0.0.1:6379/0")
    with pytest.raises(ValidationError):
        config.key_prefix = "other"  # frozen


def test_every_config_field_is_described():
    for name, field in StoreConfig.model_fields.items():
        assert field.description, name


def test_make_store_picks_by_redis_url():
    assert isinstance(make_store(StoreConfig()), MemoryStore)
    store = make_store(StoreConfig(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(store, RedisStore) and store.name == "redis"


def test_already_finished_error_survives_pickling():
    err = pickle.loads(pickle.dumps(RequestAlreadyFinishedError("r1", "completed")))
    assert (err.request_id, err.outcome) == ("r1", "completed")


# -- memory store ------------------------------------------------------------------------
async def test_memory_store_tracks_states_in_admission_order():
    store = MemoryStore()
    assert not store.durable
    for i, (t, seq) in enumerate([(5.0, 0), (1.0, 9), (1.0, 3), (3.0, 0)]):
        assert await store.put(req(i, t, seq), required=False) is False
    store.dispatched("r0", "replica-a", "replica-large", "large")
    store.dispatched("r3", "replica-b", "replica-small", "small")
    store.requeued("r3")
    store.finished("r1", "completed")
    store.dispatched("unknown", "x", "y", "z")  # ignored
    loaded = await store.load()
    assert [s.request.request_id for s in loaded] == ["r2", "r3", "r0"]
    assert [s.state for s in loaded] == ["queued", "queued", "dispatched"]
    assert (loaded[2].replica_id, loaded[2].deployment, loaded[2].gpu_class) == (
        "replica-a", "replica-large", "large")
    assert loaded[1].replica_id is None
    assert await store.done_outcome("r1") == "completed"
    assert await store.done_outcome("r0") is None
    assert store.stats() == {"connected": 0.0, "outbox_len": 0.0, "nondurable_puts_total": 4.0,
                             "write_failures_total": 0.0, "corrupt_entries_ignored": 0.0}
    assert await MemoryStore().load() == []  # a restarted queue manager finds nothing


async def test_memory_store_refuses_required_puts_and_finished_ids():
    store = MemoryStore()
    with pytest.raises(StoreUnavailableError):
        await store.put(req(1), required=True)
    assert await store.load() == []
    await store.put(req(1), required=False)
    store.finished("r1", "cancelled")
    with pytest.raises(RequestAlreadyFinishedError) as info:
        await store.put(req(1), required=False)
    assert info.value.outcome == "cancelled"


async def test_memory_store_forgets_outcomes_after_done_ttl():
    clock = FakeClock()
    store = MemoryStore(StoreConfig(done_ttl_s=10), clock=clock)
    store.finished("a", "completed")
    clock.advance(5)
    store.finished("b", "expired")
    clock.advance(6)
    assert await store.done_outcome("a") is None
    assert await store.done_outcome("b") == "expired"
    await store.put(req(7), required=False)
    store.finished("r7", "completed")
    clock.advance(11)
    assert await store.done_outcome("r7") is None
    assert await store.put(req(7), required=False) is False  # the id may be reused


# -- outbox ------------------------------------------------------------------------------
def test_dispatched_then_finished_coalesces_into_finished():
    box = Outbox()
    box.update("a", 1, "dispatched", "rep", "dep", "gpu")
    box.finish("a", 2, "completed")
    box.update("a", 3, "dispatched", "late", "dep", "gpu")  # after finished: ignored
    (write,) = box.take(10)
    assert write == PendingWrite("a", 3, outcome="completed")
    assert len(box) == 0


def test_put_carries_the_latest_state_and_finished_drops_it():
    box = Outbox()
    box.put("a", 1, b"payload", 5.0, "tok")
    box.update("a", 2, "dispatched", "rep", "dep", "gpu")
    write = box.get("a")
    assert write.put == PendingPut(b"payload", 5.0, "tok")
    assert (write.state, write.replica_id, write.version) == ("dispatched", "rep", 2)
    box.update("a", 3, "queued")
    write = box.get("a")
    assert (write.state, write.replica_id, write.put is not None) == ("queued", None, True)
    box.finish("a", 4, "cancelled")  # its put never reached redis: only the done-marker
    assert box.get("a") == PendingWrite("a", 4, outcome="cancelled")
    assert box.pending_outcome("a") == "cancelled"


def test_restored_writes_go_under_newer_changes():
    box = Outbox()
    box.put("a", 1, b"p", 5.0, "tok")
    box.update("b", 2, "dispatched", "rep", "dep", "gpu")
    box.update("c", 3, "dispatched", "rep", "dep", "gpu")
    taken = box.take(10)
    assert [w.request_id for w in taken] == ["a", "b", "c"] and len(box) == 0
    box.update("a", 4, "dispatched", "rep2", "dep", "gpu")  # while the flush was in flight
    box.finish("b", 5, "completed")
    box.restore(taken)
    a, b, c = box.get("a"), box.get("b"), box.get("c")
    assert a.put is not None and (a.state, a.replica_id, a.version) == ("dispatched", "rep2", 4)
    assert b == PendingWrite("b", 5, outcome="completed")  # an old dispatched never wins
    assert c == taken[2]


def test_voided_tokens_are_kept_through_a_new_put_and_a_finish():
    box = Outbox()
    box.void("a", 1, "t1")
    box.put("a", 2, b"p", 5.0, "t2")
    write = box.get("a")
    assert write.void_tokens == ("t1",) and write.put.token == "t2"
    box.finish("a", 3, "completed")
    assert box.get("a").void_tokens == ("t1",)
    assert merge(PendingWrite("a", 1, void_tokens=("t1",)),
                 PendingWrite("a", 2, void_tokens=("t1", "t3"))).void_tokens == ("t1", "t3")


def test_take_is_bounded_and_oldest_first():
    box = Outbox()
    for i in range(5):
        box.update(f"r{i}", i, "queued")
    assert [w.request_id for w in box.take(2)] == ["r0", "r1"]
    assert len(box) == 3 and "r2" in box and "r0" not in box


# -- rate-limited warnings ---------------------------------------------------------------
def test_rate_limited_log_counts_what_it_held_back(caplog):
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger("test.store"), interval_s=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="test.store"):
        for _ in range(100):
            log.warning("down: %s", "x")
        clock.advance(11)
        log.warning("down: %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "down: x", "down: y (99 similar warnings suppressed)"]


# -- redis store with nothing listening --------------------------------------------------
async def test_redis_store_without_a_server_fails_fast_and_keeps_changes():
    store = RedisStore(StoreConfig(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                                   write_timeout_s=0.3, flush_interval_s=0.01))
    await store.start()  # does not raise
    try:
        assert not store.durable
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            await store.put(req(1), required=True)
        assert time.monotonic() - started < 2
        assert await store.put(req(2), required=False) is False
        store.dispatched("r2", "rep", "dep", "gpu")
        store.finished("r3", "completed")
        assert await store.done_outcome("r3") == "completed"  # from the outbox
        with pytest.raises(StoreUnavailableError):
            await store.flush()
        with pytest.raises(StoreUnavailableError):
            await store.load()
        stats = store.stats()
        assert stats["connected"] == 0 and stats["outbox_len"] == 3  # r1 voided, r2, r3
        assert stats["nondurable_puts_total"] == 1 and stats["write_failures_total"] >= 1
    finally:
        await store.close()
