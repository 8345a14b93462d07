"""PredictorCore's persistence with a fake store (same interface as RedisStore): the
outbox survives failed and concurrent writes, restore merges instead of replacing, and
corrupt entries are skipped and counted."""

from __future__ import annotations

import asyncio
import json

import pytest

from predictor_service.config import PredictorConfig
from predictor_service.core import PredictorCore
from predictor_service.durations import DurationModel
from predictor_service.learner import Sample
from predictor_service.store import ModelSnapshot, Snapshot, unpack_state
from predictor_service.types import Observation
from tests.unit.fakes import FakeClock


class FakeStore:
    """In-memory stand-in for RedisStore (the core's only seam to Redis)."""

    kind = "redis"

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.connected = False
        self.snapshot = snapshot or Snapshot()
        self.history: dict[str, list[str]] = {}
        self.states: dict[str, tuple[int, bytes]] = {}
        self.durations: str | None = None
        self.fail_writes = False
        self.gate: asyncio.Event | None = None
        #: A write is waiting at the gate.
        self.held = asyncio.Event()

    async def connect(self) -> bool:
        self.connected = True
        return True

    async def load(self) -> Snapshot:
        return self.snapshot

    async def save_model(self, model, new_samples, history_size, version, length_model, state_blob):
        if self.gate is not None:
            self.held.set()
            await self.gate.wait()
        if self.fail_writes:
            raise ConnectionError("redis went away")
        self.history.setdefault(model, []).extend(new_samples)
        if state_blob is not None:
            self.states[model] = (version, state_blob)

    async def save_durations(self, payload: str) -> None:
        if self.fail_writes:
            raise ConnectionError("redis went away")
        self.durations = payload

    async def close(self) -> None:
        self.connected = False


def obs(i: int, model: str = "m") -> Observation:
    return Observation(model, f"prompt {i}", output_tokens_per_turn=(10 + i,),
                       api_calls=(("tts", 1.0),))


async def core_with(store: FakeStore, **overrides) -> PredictorCore:
    config = PredictorConfig(length_model="hashed-linear", redis_url="redis://unused",
                             refit_every=1000, **overrides)
    core = PredictorCore(config, clock=FakeClock(0.0))
    core.store = store
    await core._try_redis()
    return core


async def test_a_failed_write_keeps_the_outbox_and_the_next_one_writes_it():
    store = FakeStore()
    core = await core_with(store)
    core.observe([obs(i) for i in range(3)])
    store.fail_writes = True
    await core._persist()
    assert not store.connected and len(core.learners["m"].unsaved) == 3
    assert core.metrics.counters.redis_errors == 1
    store.fail_writes = False
    await core._try_redis()  # reconnects; no second restore
    await core._persist()
    assert [json.loads(s)["o"] for s in store.history["m"]] == [10, 11, 12]
    assert json.loads(store.durations)["names"]["tts"]["count"] == 3


async def test_observations_during_a_write_are_written_next_time():
    store = FakeStore()
    core = await core_with(store, history_size=16)
    core.observe([obs(i) for i in range(16)])
    store.gate = asyncio.Event()
    writing = asyncio.create_task(core._persist())
    await store.held.wait()
    core.observe([obs(i) for i in range(100, 104)])  # arrive while the write is in flight
    store.gate.set()
    await writing
    await core._persist()
    written = [json.loads(s)["o"] for s in store.history["m"]]
    assert written[:16] == [10 + i for i in range(16)] and written[16:] == [110, 111, 112, 113]


async def test_the_fitted_state_is_written_with_its_version():
    store = FakeStore()
    core = await core_with(store, min_history=2)
    core.observe([obs(i) for i in range(4)])
    core.learners["m"].last_fit_s = -100.0
    core.clock.advance(10)
    assert await core.refit_due() == 1
    await core._persist()
    version, blob = store.states["m"]
    assert version == 1 and "weights" in unpack_state(blob)


async def test_restore_merges_durations_per_name_and_keeps_local_samples():
    persisted = DurationModel(5.0, 15.0, 2.0, 100)
    for _ in range(1000):
        persisted.observe("tts", 3.0)
    good = Sample("old prompt", 2, 40).to_json()
    snap = Snapshot(
        models={"m": ModelSnapshot(history=[good.encode(), b"{broken", b'{"t":"x","p":-1,"o":1}'],
                                   version=7, length_model="hashed-linear", state=None)},
        durations=json.dumps(persisted.to_dict()).encode(), corrupt=1)
    store = FakeStore(snap)
    config = PredictorConfig(length_model="hashed-linear", redis_url="redis://unused",
                             refit_every=1000, min_history=1)
    core = PredictorCore(config, clock=FakeClock(0.0))
    core.store = store
    store.connected = False
    core.observe([Observation("m", "new prompt", output_tokens_per_turn=(5,),
                              api_calls=(("search", 0.5),))])  # learned before redis was up
    await core._try_redis()
    assert sorted(core.durations.names()) == ["search", "tts"]
    assert core.durations.estimate("tts").samples == 1000
    learner = core.learners["m"]
    assert [s.text for s in learner.history] == ["old prompt", "new prompt"]
    assert learner.version == 7  # the persisted version survives a missing state
    assert learner.pending >= 1  # the restored history gets fitted
    assert core.metrics.counters.corrupt_snapshots == 3  # 1 from the store + 2 entries


async def test_an_observation_with_many_calls_to_few_apis_is_accepted():
    store = FakeStore()
    core = await core_with(store)
    calls = tuple(("search" if i % 2 else "calc", 0.1) for i in range(60))
    assert core.observe([Observation("m", "p", output_tokens_per_turn=(3,) * 61,
                                     api_calls=calls)]) == (1, [])
    accepted, rejected = core.observe([Observation("m", "p", output_tokens_per_turn=(3,),
                                                   api_calls=(("a", 0.1),) * 300)])
    assert accepted == 0 and "at most 256" in rejected[0]


@pytest.mark.parametrize("bad", ['{"t":"x","p":1,"o":2,"e":"AAD8fw=="}'])  # float16 NaN
def test_a_non_finite_embedding_is_a_corrupt_entry(bad):
    with pytest.raises(ValueError, match="non-finite"):
        Sample.from_json(bad)


async def test_restore_keeps_every_persisted_sample_that_fits():
    old = [Sample(f"old {i}", 2, 10 + i).to_json().encode() for i in range(10)]
    store = FakeStore(Snapshot(models={"m": ModelSnapshot(history=old)}))
    core = await core_with(store, history_size=16)  # 10 < room 16 < 2 x 10
    assert [s.output_tokens for s in core.learners["m"].history] == list(range(10, 20))


async def test_a_refined_classifier_is_restored_over_its_checkpoint(tmp_path, monkeypatch):
    import numpy as np

    import predictor_service.length_models as length_models
    from predictor_service.length_models.classifier import save_checkpoint
    monkeypatch.setattr(length_models, "embedding_available", lambda: True)
    dim = 4 + 2  # embedding + the two dense columns
    checkpoint, refined = np.zeros((dim, 50)), np.zeros((dim, 50))
    checkpoint[-1, 25] = 10.0  # the bias says ~255 tokens
    refined[-1, 40] = 10.0  # refined by observations: ~405 tokens
    save_checkpoint(tmp_path / "c.npz", checkpoint, "test")
    snap = Snapshot(models={"m": ModelSnapshot(history=[], version=7, length_model="classifier",
                                               state={"weights": refined})})
    store = FakeStore(snap)
    config = PredictorConfig(length_model="classifier", redis_url="redis://unused",
                             classifier_checkpoint=str(tmp_path / "c.npz"))
    core = PredictorCore(config, clock=FakeClock(0.0),
                         embedder_factory=lambda: type("E", (), {"dim": 4, "embed": staticmethod(
                             lambda texts: np.ones((len(texts), 4), dtype=np.float32) / 2)})())
    core.store = store
    await core.start()
    try:
        from predictor_service.types import LengthQuery
        (p,) = await core.predict([LengthQuery("m", "anything")])
        assert p.predictor_version == 7 and 400 <= p.output_tokens <= 410
        (fresh,) = await core.predict([LengthQuery("other", "anything")])  # the checkpoint
        assert fresh.predictor_version == 0 and 250 <= fresh.output_tokens <= 260
    finally:
        await core.stop()
