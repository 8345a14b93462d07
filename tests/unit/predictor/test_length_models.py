"""Length distributions and the length models on toy data with known answers (no
embedding model: embeddings are hand-made unit vectors)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from predictor_service.config import PredictorConfig
from predictor_service.distributions import (LEVELS, LengthDistribution, from_bins, from_samples,
                                             lognormal)
from predictor_service.length_models import LENGTH_MODELS, Batch
from predictor_service.length_models.classifier import (BinClassifier, load_checkpoint,
                                                        save_checkpoint)
from predictor_service.length_models.hashed_linear import HASH_DIM, HashedLinear
from predictor_service.length_models.knn import EmbeddingKnn, embedding_design
from predictor_service.length_models.regression import LogRegressor
from predictor_service.store import pack_state, unpack_state
from predictor_service.types import NUM_BINS, bin_of

CONFIG = PredictorConfig(length_model="hashed-linear")
DIM = 8
E = np.eye(DIM)


def assert_same(a: list[LengthDistribution], b: list[LengthDistribution]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.point, x.p50, x.p90) == (y.point, y.p50, y.p90)
        np.testing.assert_array_equal(x.bin_probs, y.bin_probs)


def assert_valid(d: LengthDistribution) -> None:
    assert d.bin_probs.shape == (NUM_BINS,)
    assert d.bin_probs.min() >= 0
    assert d.bin_probs.sum() == pytest.approx(1.0)
    assert 0 <= d.p50 <= d.p90
    assert d.point == d.p50


# ---- distributions -----------------------------------------------------------------------
def test_from_samples_quantiles_and_bins():
    d = from_samples(np.array([45.0, 5.0, 25.0, 15.0, 35.0]))
    assert (d.point, d.p50, d.p90) == (25.0, 25.0, 45.0)
    np.testing.assert_allclose(d.bin_probs[:5], 0.2)
    assert d.bin_probs[5:].sum() == 0
    assert_valid(d)


def test_from_samples_weights_and_clipping():
    d = from_samples(np.array([5.0, 300.0]), np.array([1.0, 9.0]))
    assert d.p50 == 300.0 and d.p90 == 300.0
    assert d.bin_probs[0] == pytest.approx(0.1) and d.bin_probs[30] == pytest.approx(0.9)
    # beyond the last bin: the open-ended bin 49; negative lengths count as 0
    d = from_samples(np.array([-3.0, 10_000.0]))
    assert d.bin_probs[0] == pytest.approx(0.5) and d.bin_probs[NUM_BINS - 1] == pytest.approx(0.5)
    assert d.p50 == 0.0
    # unusable weights: uniform
    d = from_samples(np.array([5.0, 300.0]), np.array([0.0, 0.0]))
    assert d.bin_probs[0] == pytest.approx(0.5) and d.bin_probs[30] == pytest.approx(0.5)


def test_from_sorted_rows_equals_from_samples_per_row():
    from predictor_service.distributions import from_sorted_rows
    rng = np.random.default_rng(0)
    values = np.sort(np.expm1(rng.normal(4.0, 1.0, size=(50, 99))), axis=1)
    for batch, row in zip(from_sorted_rows(values), values):
        one = from_samples(row)
        assert (batch.p50, batch.p90) == (one.p50, one.p90)
        assert np.allclose(batch.bin_probs, one.bin_probs)


def test_from_bins_interpolates_inside_bins():
    one = from_bins(np.eye(NUM_BINS)[3])
    assert (one.p50, one.p90) == (pytest.approx(35.0), pytest.approx(39.0))
    probs = np.zeros(NUM_BINS)
    probs[1] = probs[3] = 2.0  # not normalised: from_bins normalises
    two = from_bins(probs)
    assert two.p50 == pytest.approx(20.0)  # the top of bin 1
    assert two.p90 == pytest.approx(38.0)  # 80 % into bin 3
    assert two.bin_probs.sum() == pytest.approx(1.0) and two.bin_probs[1] == pytest.approx(0.5)
    assert_valid(two)


def test_lognormal_prior():
    d = lognormal(128.0, 512.0)
    assert d.p50 == pytest.approx(128.0)
    assert d.p90 == pytest.approx(512.0, rel=0.05)
    assert_valid(d)
    # mass below the median's bin and above it: about half each
    assert d.bin_probs[:bin_of(128)].sum() == pytest.approx(0.5, abs=0.06)
    flat = lognormal(55.0, 55.0)
    assert flat.p50 == pytest.approx(55.0) and flat.p90 == pytest.approx(55.0, rel=1e-4)
    assert flat.bin_probs[5] == pytest.approx(1.0)


def test_capped_moves_mass_into_the_cap_bin():
    d = lognormal(128.0, 512.0)
    before = d.bin_probs.copy()
    c = d.capped(100)
    assert (c.point, c.p50, c.p90) == (100.0, 100.0, 100.0)
    assert c.bin_probs[10] == pytest.approx(before[10:].sum())
    assert c.bin_probs[11:].sum() == 0
    np.testing.assert_array_equal(c.bin_probs[:10], before[:10])
    assert c.bin_probs.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(d.bin_probs, before)  # the original is untouched

    mid = d.capped(300)  # above the median, below the p90
    assert mid.p50 == pytest.approx(128.0) and mid.p90 == 300.0
    assert mid.bin_probs[30] == pytest.approx(before[30:].sum())

    assert d.capped(0) is d
    wide = d.capped(100_000)  # beyond the last bin: only the values are capped
    np.testing.assert_array_equal(wide.bin_probs, before)
    assert wide.p90 == d.p90


# ---- LogRegressor ------------------------------------------------------------------------
def _log_linear(n: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 3.0, n)
    lengths = np.exp(1.5 * x + 3.0) * np.exp(rng.normal(0.0, noise, n))
    return np.stack([x, np.ones_like(x)], axis=1), lengths


def test_log_regressor_recovers_a_log_linear_relation():
    x, lengths = _log_linear(400, noise=0.02)
    reg = LogRegressor.fit(x, lengths, l2=1e-6)
    np.testing.assert_allclose(reg.weights, [1.5, 3.0], atol=0.05)
    test_x = np.array([[0.2, 1.0], [1.5, 1.0], [2.8, 1.0]])
    truth = np.exp(1.5 * test_x[:, 0] + 3.0)
    medians = [d.p50 for d in reg.predict(test_x)]
    np.testing.assert_allclose(medians, truth, rtol=0.05)


def test_log_regressor_spread_follows_the_noise():
    x, lengths = _log_linear(2000, noise=0.3, seed=1)
    reg = LogRegressor.fit(x, lengths, l2=1e-6)
    (d,) = reg.predict(np.array([[2.0, 1.0]]))
    assert d.p50 == pytest.approx(math.exp(6.0), rel=0.05)
    assert d.p90 / d.p50 == pytest.approx(math.exp(1.2816 * 0.3), rel=0.06)


def test_log_regressor_warm_start_keeps_the_ridge_solution():
    """Refits warm-started from the previous weights solve the same ridge problem: the
    solution and its residual spread must not drift toward an overfit."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 60))  # more features than samples: ridge matters
    lengths = np.exp(rng.normal(4.0, 1.0, 30))
    cold = LogRegressor.fit(x, lengths, l2=1.0)
    reg = cold
    for _ in range(5):
        reg = LogRegressor.fit(x, lengths, l2=1.0, warm=reg.weights)
    np.testing.assert_allclose(reg.weights, cold.weights, atol=1e-4)
    np.testing.assert_allclose(reg.residuals, cold.residuals, atol=1e-4)
    # a warm start of the wrong shape is ignored
    other = LogRegressor.fit(x, lengths, l2=1.0, warm=np.ones(7))
    np.testing.assert_allclose(other.weights, cold.weights, atol=1e-6)


@pytest.mark.parametrize("state", [
    {"weights": np.ones(3), "residuals": np.zeros(5)},
    {"weights": np.ones((3, 2)), "residuals": np.zeros(len(LEVELS))},
    {"weights": np.array([1.0, np.nan]), "residuals": np.zeros(len(LEVELS))},
])
def test_log_regressor_rejects_bad_state(state):
    with pytest.raises(ValueError):
        LogRegressor.from_state(state, "")


# ---- hashed-linear -----------------------------------------------------------------------
SUBJECTS = ["cats", "the weather", "rivers", "old trains", "jazz", "bridges", "tea", "maps",
            "glaciers", "chess", "bees", "paper", "clocks", "salt", "owls", "lamps"]


def _prompt_batch(seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    texts = ([f"translate '{s}' into French" for s in SUBJECTS]
             + [f"write an essay about {s}" for s in SUBJECTS])
    lengths = np.concatenate([rng.normal(10, 1, len(SUBJECTS)), rng.normal(300, 20, len(SUBJECTS))])
    return Batch(texts, np.full(len(texts), 12.0), None, np.round(lengths))


QUERIES = Batch(["translate 'good morning' into French", "write an essay about volcanoes",
                 "Translate 'thank you' into French please"], np.array([12.0, 12.0, 14.0]))


def test_hashed_linear_separates_short_and_long_prompts():
    model = HashedLinear(CONFIG).fit(_prompt_batch())
    short, long_, short2 = model.predict(QUERIES)
    for d in (short, long_, short2):
        assert_valid(d)
    assert short.p50 < 25 and short2.p50 < 25
    assert long_.p50 > 120
    assert long_.p50 > 8 * short.p50
    assert bin_of(short.p50) < 3 and bin_of(long_.p50) >= 12


def test_hashed_linear_refits_keep_their_spread():
    batch = _prompt_batch()
    cold = HashedLinear(CONFIG).fit(batch)
    warm = cold
    for _ in range(4):
        warm = warm.fit(batch)  # the learner refits the whole history, warm-started
    for a, b in zip(cold.predict(QUERIES), warm.predict(QUERIES)):
        assert b.p50 == pytest.approx(a.p50, rel=1e-3)
        assert b.p90 == pytest.approx(a.p90, rel=1e-3)


def test_hashed_linear_state_round_trip():
    model = HashedLinear(CONFIG).fit(_prompt_batch())
    assert HashedLinear(CONFIG).state() == {}
    state = model.state()
    assert_same(HashedLinear.from_state(CONFIG, state).predict(QUERIES), model.predict(QUERIES))
    # as persisted in Redis: an .npz blob
    restored = HashedLinear.from_state(CONFIG, unpack_state(pack_state(state)))
    assert_same(restored.predict(QUERIES), model.predict(QUERIES))


def test_hashed_linear_rejects_bad_state():
    good = HashedLinear(CONFIG).fit(_prompt_batch()).state()
    with pytest.raises(ValueError):
        HashedLinear.from_state(CONFIG, {**good, "weights": np.ones(10)})
    with pytest.raises(ValueError):
        HashedLinear.from_state(CONFIG, {**good, "weights": np.ones((HASH_DIM + 2, 1))})
    with pytest.raises(ValueError):
        HashedLinear.from_state(CONFIG, {**good, "residuals": np.zeros(0)})
    with pytest.raises(KeyError):
        HashedLinear.from_state(CONFIG, {"weights": good["weights"]})


# ---- embedding-knn -----------------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _knn_batch() -> Batch:
    """Ten prompts at e0 answered with 20 tokens, ten at e1 with 400."""
    keys = np.vstack([np.repeat(E[:1], 10, axis=0), np.repeat(E[1:2], 10, axis=0)])
    lengths = np.array([20.0] * 10 + [400.0] * 10)
    return Batch(["p"] * 20, np.full(20, 30.0), keys, lengths)


def _query(*vectors: np.ndarray) -> Batch:
    return Batch(["q"] * len(vectors), np.full(len(vectors), 30.0), np.vstack(vectors))


def test_knn_answers_with_the_neighbourhood_length():
    model = EmbeddingKnn(CONFIG).fit(_knn_batch())
    a, b = model.predict(_query(E[0], E[1]))
    assert (a.p50, a.p90) == (20.0, 20.0)
    assert (b.p50, b.p90) == (400.0, 400.0)
    assert a.bin_probs[2] == pytest.approx(1.0) and b.bin_probs[40] == pytest.approx(1.0)


def test_knn_similarity_threshold_and_regression_fallback():
    assert CONFIG.knn_min_similarity == 0.6
    model = EmbeddingKnn(CONFIG).fit(_knn_batch())
    near = _unit(0.7 * E[0] + math.sqrt(1 - 0.49) * E[5])  # cosine 0.7 with e0
    far = _unit(0.5 * E[0] + math.sqrt(1 - 0.25) * E[5])  # cosine 0.5 with e0
    queries = _query(near, far, E[5])
    got = model.predict(queries)
    regression = model.regressor.predict(embedding_design(queries))
    assert (got[0].p50, got[0].p90) == (20.0, 20.0)  # still the neighbourhood
    for row in (1, 2):  # below the threshold: the regression answers
        assert_same([got[row]], [regression[row]])
        assert got[row].p90 < 200  # not a vote over all (equally far) neighbours
    # the regression itself learned the two clusters
    r0, r1 = model.regressor.predict(embedding_design(_query(E[0], E[1])))
    assert r0.p50 < r1.p50


def test_knn_state_round_trip_and_bad_state():
    model = EmbeddingKnn(CONFIG).fit(_knn_batch())
    queries = _query(E[0], E[1], E[5], _unit(E[0] + E[1]))
    state = unpack_state(pack_state(model.state()))
    assert_same(EmbeddingKnn.from_state(CONFIG, state).predict(queries), model.predict(queries))
    assert EmbeddingKnn(CONFIG).state() == {}
    with pytest.raises(ValueError):
        EmbeddingKnn.from_state(CONFIG, {**state, "lengths": state["lengths"][:-1]})
    with pytest.raises(ValueError):  # regression weights of another embedding dimension
        EmbeddingKnn.from_state(CONFIG, {**state, "reg_weights": np.ones(DIM + 5)})
    with pytest.raises(KeyError):
        EmbeddingKnn.from_state(CONFIG, {"keys": state["keys"], "lengths": state["lengths"]})


# ---- classifier --------------------------------------------------------------------------
CLASSES = {0: 25.0, 1: 405.0, 2: 95.0}  # embedding e_i -> length (bins 2, 40, 9)


def _classifier_batch() -> Batch:
    rng = np.random.default_rng(3)
    rows, lengths = [], []
    for i, length in CLASSES.items():
        for _ in range(12):
            rows.append(_unit(E[i] + rng.normal(0, 0.05, DIM)))
            lengths.append(length + rng.integers(-3, 4))
    return Batch(["p"] * len(rows), np.full(len(rows), 30.0), np.vstack(rows), np.array(lengths))


def test_classifier_learns_separable_bins():
    untrained = BinClassifier(CONFIG)
    assert not untrained.ready and untrained.state() == {}
    model = untrained.fit(_classifier_batch())
    assert model.ready
    for i, d in enumerate(model.predict(_query(*(E[i] for i in CLASSES)))):
        want = bin_of(CLASSES[i])
        assert_valid(d)
        assert int(np.argmax(d.bin_probs)) == want
        assert d.bin_probs[want] > 0.5
        assert bin_of(d.p50) == want


def test_classifier_checkpoint_round_trip(tmp_path):
    model = BinClassifier(CONFIG).fit(_classifier_batch())
    path = tmp_path / "classifier.npz"
    save_checkpoint(path, model.weights, "test-embedding")
    np.testing.assert_array_equal(load_checkpoint(path), model.weights)
    config = PredictorConfig(length_model="classifier", classifier_checkpoint=str(path))
    loaded = BinClassifier(config)
    assert loaded.ready
    queries = _query(E[0], E[1], E[2], E[6])
    assert_same(loaded.predict(queries), model.predict(queries))
    assert_same(BinClassifier.from_state(CONFIG, model.state()).predict(queries),
                model.predict(queries))
    with pytest.raises(ValueError):
        BinClassifier.from_state(CONFIG, {"weights": np.ones((DIM + 2, NUM_BINS - 1))})


@pytest.mark.parametrize("content", ["garbage", "empty", "truncated", "wrong-shape", "missing"])
def test_corrupt_classifier_checkpoint_raises_value_error(tmp_path, content):
    path = tmp_path / "classifier.npz"
    weights = np.zeros((DIM + 2, NUM_BINS))
    save_checkpoint(path, weights, "test-embedding")
    if content == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif content == "wrong-shape":
        save_checkpoint(path, np.zeros((DIM + 2, 7)), "test-embedding")
    else:
        path = tmp_path / "absent.npz"
    with pytest.raises(ValueError, match="classifier checkpoint"):
        load_checkpoint(path)
    with pytest.raises(ValueError):
        BinClassifier(PredictorConfig(length_model="classifier", classifier_checkpoint=str(path)))


def test_registry_names():
    assert set(LENGTH_MODELS) == {"embedding-knn", "hashed-linear", "classifier"}
    assert all(LENGTH_MODELS[name].name == name for name in LENGTH_MODELS)
