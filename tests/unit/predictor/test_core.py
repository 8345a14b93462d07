"""PredictorCore as a plain object: hashed-linear (or embedding-knn on a fake embedder),
memory store, a fake clock; refits are driven by the test through ``refit_due``.

The core's own maintenance loop also calls ``refit_due`` (every 0.2 s of real time) and may
refit once more after the test's; assertions therefore allow ``version >= 1``."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest

import predictor_service.length_models as length_models
from predictor_service.config import PredictorConfig
from predictor_service.core import PredictorCore, PredictorInputError, PredictorUnavailableError
from predictor_service.features import prompt_text
from predictor_service.learner import Learner, Sample
from predictor_service.length_models.hashed_linear import HashedLinear
from predictor_service.types import LengthQuery, Observation
from tests.unit.fakes import FakeClock, until

SUBJECTS = ["cats", "the weather", "rivers", "old trains", "jazz", "bridges", "tea", "maps",
            "glaciers", "chess", "bees", "paper"]
SHORT = LengthQuery("m", "translate 'good night' into French")
LONG = LengthQuery("m", "write an essay about volcanoes")


def short_and_long_observations(model: str = "m") -> list[Observation]:
    return ([Observation(model, f"translate '{s}' into French", output_tokens_per_turn=(10, 4))
             for s in SUBJECTS]
            + [Observation(model, f"write an essay about {s}", output_tokens_per_turn=(300,))
               for s in SUBJECTS])


@pytest.fixture
async def make_core():
    cores: list[PredictorCore] = []

    async def make(clock: FakeClock | None = None, embedder_factory=None,
                   **overrides) -> PredictorCore:
        config = PredictorConfig(**{"length_model": "hashed-linear", "refit_every": 1000,
                                    **overrides})
        core = PredictorCore(config, clock=clock or FakeClock(0.0),
                             embedder_factory=embedder_factory)
        await core.start()
        cores.append(core)
        return core

    yield make
    for core in cores:
        await core.stop()
        assert core.stopped and core._tasks == [] and core._queue == []


# ---- lifecycle ---------------------------------------------------------------------------
async def test_start_and_stop(make_core):
    core = await make_core()
    assert len(core._tasks) == 2 and not any(t.done() for t in core._tasks)
    info = core.info()
    assert info["length_model"] == "hashed-linear" and info["persistence"] == "memory"
    assert info["models"] == [] and info["embedding_model"] == ""
    tasks = list(core._tasks)
    await core.stop()
    assert all(t.done() for t in tasks) and core.stopped


async def test_not_running_is_unavailable_and_stop_fails_queries_still_waiting():
    core = PredictorCore(PredictorConfig(length_model="hashed-linear"), clock=FakeClock(0.0))
    with pytest.raises(PredictorUnavailableError, match="not running"):
        await core.predict([SHORT])  # never started
    await core.start()
    release = threading.Event()
    real = core._predict_lengths
    core._predict_lengths = lambda qs: (release.wait(10), real(qs))[1]
    evaluating = asyncio.create_task(core.predict([SHORT]))
    await until(lambda: len(core._inflight) == 1)
    waiting = asyncio.create_task(core.predict([SHORT]))
    await until(lambda: len(core._queue) == 1)
    assert len(core._queue) == 1 and len(core._inflight) == 1
    await core.stop()
    release.set()
    for task in (evaluating, waiting):
        with pytest.raises(PredictorUnavailableError, match="shutting down"):
            await task
    with pytest.raises(PredictorUnavailableError):
        await core.predict([SHORT])


# ---- validation --------------------------------------------------------------------------
@pytest.mark.parametrize("query, message", [
    (LengthQuery("m"), "prompt is empty"),
    (LengthQuery("m", "hi", prompt_tokens=-1), "prompt_tokens: -1 is negative"),
    (LengthQuery("m", prompt_token_ids=(5, -2)), "negative token ids"),
    (LengthQuery("m", "hi", prompt_tokens=2_000_000), "over the limit"),
    (LengthQuery("m", "hi", api_names=tuple(f"api{i}" for i in range(33))), "33 names"),
    (LengthQuery("m", "hi", api_names=("search", "")), "api_names"),
    (LengthQuery("m", "hi", api_names=("x" * 129,)), "api_names"),
    (LengthQuery("m", "hi", max_tokens=-1), "max_tokens: -1 is negative"),
    (LengthQuery("", "hi"), "model"),
])
async def test_invalid_queries(make_core, query, message):
    core = await make_core()
    with pytest.raises(PredictorInputError, match=message):
        await core.predict([query])
    with pytest.raises(PredictorInputError):  # one bad query fails the whole call
        await core.predict([SHORT, query])
    assert core.metrics.counters.invalid == 2 and core.metrics.counters.predictions == 0


async def test_unknown_model_when_models_are_configured(make_core):
    core = await make_core(models=["a"])
    with pytest.raises(PredictorInputError, match="unknown model 'b'"):
        await core.predict([LengthQuery("b", "hi")])
    accepted, rejected = core.observe([Observation("b", "hi", output_tokens_per_turn=(3,)),
                                       Observation("a", "hi", output_tokens_per_turn=(3,))])
    assert accepted == 1 and len(rejected) == 1
    assert rejected[0].startswith("observations[0]: model: unknown model 'b'")
    assert list(core.learners) == ["a"]
    (p,) = await core.predict([LengthQuery("a", "hi")])
    assert p.fallback


async def test_at_most_max_models_are_learned(make_core):
    core = await make_core(max_models=2)
    accepted, rejected = core.observe(
        [Observation(m, "hi", output_tokens_per_turn=(3,)) for m in ("a", "b", "c", "a")])
    assert accepted == 3
    assert rejected == ["observations[2]: model: 'c' would be model number 3; at most 2 "
                        "(max_models) are learned"]
    assert sorted(core.learners) == ["a", "b"]
    (p,) = await core.predict([LengthQuery("c", "hi")])  # predicting learns nothing: the prior
    assert p.fallback and "c" not in core.learners


# ---- prediction and learning -------------------------------------------------------------
async def test_prior_until_min_history(make_core):
    clock = FakeClock(0.0)
    core = await make_core(clock, min_history=8)
    accepted, rejected = core.observe(short_and_long_observations()[:7])
    assert (accepted, rejected) == (7, [])
    clock.advance(10.0)
    assert await core.refit_due() == 0  # 7 < min_history
    for p in await core.predict([SHORT, LONG]):
        assert p.fallback and p.predictor_version == 0 and p.length_model == "hashed-linear"
        assert p.output_tokens == p.output_tokens_p50 == pytest.approx(128.0)
        assert p.output_tokens_p90 == pytest.approx(core.prior.p90)
        assert len(p.bin_probs) == 50 and sum(p.bin_probs) == pytest.approx(1.0)
    (capped,) = await core.predict([LengthQuery("m", "hi", max_tokens=60)])
    assert capped.output_tokens == capped.output_tokens_p90 == 60.0
    assert sum(capped.bin_probs[7:]) == 0 and sum(capped.bin_probs) == pytest.approx(1.0)


async def test_refit_moves_predictions_toward_the_observed_lengths(make_core):
    clock = FakeClock(0.0)
    core = await make_core(clock, min_history=8, refit_interval_s=2.0)
    assert core.observe(short_and_long_observations()) == (24, [])
    assert await core.refit_due() == 0  # not due: no time has passed, few observations
    clock.advance(2.5)
    assert await core.refit_due() == 1
    assert await core.refit_due() == 0  # nothing new since
    learner = core.learners["m"]
    assert learner.version >= 1 and learner.pending == 0
    assert core.metrics.counters.refits >= 1
    short, long_ = await core.predict([SHORT, LONG])
    for p in (short, long_):
        assert not p.fallback and p.predictor_version == learner.version
    # the first turn's length is what is learned (10, not 10 + 4)
    assert abs(short.output_tokens - 10) < abs(core.prior.p50 - 10) / 3
    assert abs(long_.output_tokens - 300) < abs(core.prior.p50 - 300)
    assert long_.output_tokens > 5 * short.output_tokens
    (info_model,) = core.info()["models"]
    assert info_model == {"model": "m", "version": learner.version, "history_size": 24,
                          "observations_total": 24}


async def test_answers_keep_query_order_across_batches(make_core):
    core = await make_core(max_batch=4)
    queries = [LengthQuery("m", f"prompt {i}", max_tokens=i + 1) for i in range(30)]
    results = await asyncio.gather(core.predict(queries[:10]), core.predict(queries[10:]))
    answers = [p for batch in results for p in batch]
    assert [p.output_tokens for p in answers] == [float(i + 1) for i in range(30)]
    assert core.metrics.counters.predictions == 30


def test_learner_due_after_refit_every_or_interval():
    config = PredictorConfig(length_model="hashed-linear", min_history=4, refit_every=6,
                             refit_interval_s=2.0)
    learner = Learner("m", HashedLinear(config), config)
    learner.add([Sample(f"p{i}", 3, 10) for i in range(3)])
    assert not learner.due(100.0)  # below min_history
    learner.add([Sample("p", 3, 10)])
    assert not learner.due(1.0) and learner.due(2.0)  # by time
    learner.add([Sample("p", 3, 10)] * 2)
    assert learner.due(0.0)  # by count
    fitted, errors = learner.fit_job(None)()
    assert errors.size == 0  # nothing fitted before: no errors to report
    learner.add([Sample("p", 3, 10)])  # arrived while fitting
    learner.install(fitted, 5.0, fitted_pending=6)
    assert learner.version == 1 and learner.pending == 1 and learner.state_dirty
    assert not learner.due(6.0) and learner.due(7.0)


# ---- observations ------------------------------------------------------------------------
async def test_observe_rejects_bad_observations_individually(make_core):
    core = await make_core()
    good = Observation("m", "hello", output_tokens_per_turn=(7,), api_calls=(("search", 1.0),))
    batch = [
        good,
        Observation("m", "hello", output_tokens_per_turn=(5, -1)),
        Observation("m", "hello", output_tokens_per_turn=(7,),
                    api_calls=(("search", 2.0), ("calc", math.nan))),
        Observation("m", "hello", output_tokens_per_turn=()),
        Observation("m", "", output_tokens_per_turn=(7,)),
        Observation("m", "hello", output_tokens_per_turn=(7,), api_calls=(("calc", -1.0),)),
        Observation("m", "hello", output_tokens_per_turn=(7,), api_calls=(("calc", math.inf),)),
        Observation("m", prompt_token_ids=(1, 2, 3), output_tokens_per_turn=(9,)),
    ]
    accepted, rejected = core.observe(batch)
    assert accepted == 2
    assert [r.split(":")[0] for r in rejected] == [
        f"observations[{i}]" for i in (1, 2, 3, 4, 5, 6)]
    assert "output_tokens_per_turn" in rejected[0] and "output_tokens_per_turn" in rejected[2]
    assert "'calc'" in rejected[1] and "finite" in rejected[1]
    assert "prompt is empty" in rejected[3]
    # a rejected observation leaves nothing behind: search has the good one's duration only
    assert [(s.text, s.prompt_tokens, s.output_tokens) for s in core.learners["m"].history] == [
        ("hello", 1, 7), ("t1 t2 t3", 3, 9)]
    assert core.durations.estimate("search").samples == 1
    assert core.durations.estimate("calc").samples == 0
    assert core.metrics.counters.observations == 2 and core.metrics.counters.invalid == 6

    accepted, rejected = core.observe([Observation("new", "", output_tokens_per_turn=(1,))])
    assert accepted == 0 and "new" not in core.learners  # no learner for a rejected one
    with pytest.raises(PredictorInputError, match="observations: 1025 in one call"):
        core.observe([good] * 1025)


async def test_api_durations_prior_then_data(make_core):
    core = await make_core()
    (p,) = await core.predict([LengthQuery("m", "hi", api_names=("search", "never-seen"))])
    assert [(d.name, d.mean_s, d.p90_s, d.samples) for d in p.api_durations] == [
        ("search", 5.0, 15.0, 0), ("never-seen", 5.0, 15.0, 0)]
    obs = [Observation("m", "hi", output_tokens_per_turn=(3,), api_calls=(("search", 1.0),))
           for _ in range(20)]
    assert core.observe(obs) == (20, [])
    (p,) = await core.predict([LengthQuery("m", "hi", api_names=("search", "never-seen"))])
    search, unseen = p.api_durations
    w = core.config.duration_prior_weight
    assert search.samples == 20
    assert search.mean_s == pytest.approx((w * 5.0 + 20 * 1.0) / (w + 20))
    assert search.p90_s == pytest.approx((w * 15.0 + 20 * 1.0) / (w + 20))
    assert search.mean_s < 1.5 and search.p90_s < 3.0
    assert (unseen.mean_s, unseen.p90_s, unseen.samples) == (5.0, 15.0, 0)
    assert [d.name for d in core.info()["api_durations"]] == ["search"]


async def test_oversized_prompt_is_cut(make_core):
    core = await make_core(max_prompt_chars=64)
    text = "".join(chr(ord("a") + i % 26) for i in range(40_000))
    cut = prompt_text(text, (), 64)
    assert cut.startswith(text[:32]) and cut.endswith(text[-32:])
    assert len(cut) <= 64 + len(" … ") and cut != text
    assert prompt_text("short", (), 64) == "short"
    assert prompt_text("", (7, 8), 64) == "t7 t8"
    long_ids = prompt_text("", tuple(range(1000)), 64)
    assert long_ids.startswith("t0 t1 t2") and long_ids.endswith("t998 t999")

    checked = core.validate(LengthQuery("m", text))
    assert checked.prompt_text == cut
    assert checked.prompt_tokens == 10_000  # estimated from the full text (4 chars a token)
    assert core.observe([Observation("m", text, output_tokens_per_turn=(3,))]) == (1, [])
    (sample,) = core.learners["m"].history
    assert sample.text == cut and sample.prompt_tokens == 10_000
    (p,) = await core.predict([LengthQuery("m", text)])
    assert p.fallback  # still the prior, but answered


# ---- embedding-knn through the core, on a fake embedder ----------------------------------
class KeywordEmbedder:
    """Unit vectors by keyword, standing in for the sentence embedding."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts.extend(texts)
        out = np.zeros((len(texts), 4), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, 0 if "translate" in t else 1 if "essay" in t else 2] = 1.0
        return out


async def test_embedding_knn_core_on_a_fake_embedder(make_core, monkeypatch):
    monkeypatch.setattr(length_models, "embedding_available", lambda: True)
    embedder = KeywordEmbedder()
    clock = FakeClock(0.0)
    core = await make_core(clock, embedder_factory=lambda: embedder, length_model="embedding-knn")
    assert core.info()["embedding_model"]
    assert core.observe(short_and_long_observations()) == (24, [])
    clock.advance(5.0)
    assert await core.refit_due() == 1
    history = core.learners["m"].history
    assert all(s.embedding is not None and s.embedding.shape == (4,) for s in history)
    assert {s.text for s in history} <= set(embedder.texts)
    short, long_ = await core.predict([SHORT, LONG])
    assert not short.fallback and short.length_model == "embedding-knn"
    assert (short.output_tokens, short.output_tokens_p90) == (10.0, 10.0)
    assert (long_.output_tokens, long_.output_tokens_p90) == (300.0, 300.0)
    assert {SHORT.prompt_text, LONG.prompt_text} <= set(embedder.texts)


def test_predict_now_and_refit_now_run_in_the_callers_thread_on_its_clock():
    from predictor_service.config import PredictorConfig
    from predictor_service.core import PredictorCore
    from predictor_service.types import LengthQuery, Observation
    now = [0.0]
    core = PredictorCore(PredictorConfig(length_model="hashed-linear", min_history=8,
                                         refit_every=8), clock=lambda: now[0])
    q = LengthQuery(model="m", prompt_token_ids=(1, 2, 3), prompt_tokens=3, api_names=("s",))
    before = core.predict_now([q])[0]
    assert before.fallback and before.api_durations[0].name == "s"
    for i in range(8):
        core.observe([Observation(model="m", prompt_token_ids=(1, 2, 3), prompt_tokens=3,
                                  output_tokens_per_turn=(40,), api_calls=(("s", 2.0),))])
    assert core.refit_now() == 1
    after = core.predict_now([q])[0]
    assert not after.fallback and after.predictor_version == 1
