import json
import math
import random

import pytest

from predictor_service.durations import ApiDurationStats, DurationEstimate, DurationModel, P2Quantile


def _exact(xs, p):
    xs = sorted(xs)
    pos = p * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


DISTS = {
    "uniform": lambda r: r.uniform(0, 10),
    "exponential": lambda r: r.expovariate(1 / 2.0),
    "lognormal": lambda r: r.lognormvariate(0.0, 0.75),
}


@pytest.mark.parametrize("dist", sorted(DISTS))
@pytest.mark.parametrize("p", [0.5, 0.9])
def test_p2_converges(dist, p):
    r = random.Random(1234)
    xs = [DISTS[dist](r) for _ in range(20_000)]
    est = P2Quantile(p)
    for x in xs:
        est.add(x)
    assert est.count == 20_000
    exact = _exact(xs, p)
    assert est.value() == pytest.approx(exact, rel=0.03)


def test_p2_exact_below_five_samples():
    est = P2Quantile(0.9)
    assert est.value() is None
    xs = [4.0, 1.0, 3.0, 2.0]
    for i, x in enumerate(xs, 1):
        est.add(x)
        assert est.value() == pytest.approx(_exact(xs[:i], 0.9))
    assert P2Quantile(0.5).value() is None
    one = P2Quantile(0.5)
    one.add(7.0)
    assert one.value() == 7.0


def test_p2_rejects_bad_input():
    for p in (0.0, 1.0, -0.1, math.nan, "0.5"):
        with pytest.raises(ValueError):
            P2Quantile(p)
    with pytest.raises(ValueError):
        P2Quantile(0.5).add(math.nan)


@pytest.mark.parametrize("n", [0, 3, 5, 500])
def test_p2_round_trip(n):
    r = random.Random(n)
    est = P2Quantile(0.9)
    for _ in range(n):
        est.add(r.expovariate(1.0))
    back = P2Quantile.from_dict(json.loads(json.dumps(est.to_dict())))
    assert back.value() == est.value() and back.count == est.count
    for _ in range(100):  # continues identically
        x = r.expovariate(1.0)
        est.add(x)
        back.add(x)
    assert back.value() == est.value()


@pytest.mark.parametrize(
    "bad",
    [
        None, [], "x", {}, {"p": 0.5},
        {"p": 0.5, "count": 2, "q": [1.0], "n": [], "np": []},
        {"p": 0.5, "count": 2, "q": [2.0, 1.0], "n": [], "np": []},
        {"p": 0.5, "count": -1, "q": [], "n": [], "np": []},
        {"p": 1.5, "count": 0, "q": [], "n": [], "np": []},
        {"p": 0.5, "count": 6, "q": [1, 2, 3, 4, 5], "n": [1, 2, 3, 4, 5], "np": [1, 2, 3, 4, 6]},
        {"p": 0.5, "count": 6, "q": [1, 2, 3, 4, 5], "n": [1, 3, 3, 4, 6], "np": [1, 2, 3, 4, 6]},
        {"p": 0.5, "count": 5, "q": [1, 2, 3, 4, "5"], "n": [1, 2, 3, 4, 5], "np": [1, 2, 3, 4, 5]},
        {"p": 0.5, "count": 0, "q": None, "n": [], "np": []},
    ],
)
def test_p2_from_dict_garbage(bad):
    with pytest.raises(ValueError):
        P2Quantile.from_dict(bad)


def test_api_stats_welford_and_round_trip():
    r = random.Random(7)
    xs = [r.uniform(0, 4) for _ in range(1000)]
    s = ApiDurationStats()
    for x in xs:
        s.add(x)
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    assert s.count == 1000
    assert s.mean == pytest.approx(mean)
    assert s.variance == pytest.approx(var)
    back = ApiDurationStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert (back.count, back.mean, back.variance) == (s.count, s.mean, s.variance)
    assert back.p50.value() == s.p50.value() and back.p90.value() == s.p90.value()
    bad = s.to_dict()
    bad["count"] = 999
    with pytest.raises(ValueError):
        ApiDurationStats.from_dict(bad)
    with pytest.raises(ValueError):
        ApiDurationStats.from_dict({"count": 0})


def _model(**kw):
    args = dict(prior_mean_s=1.0, prior_p90_s=3.0, prior_weight=5.0, max_names=10)
    args.update(kw)
    return DurationModel(**args)


def test_model_prior_for_unknown_names():
    m = _model()
    assert m.estimate("never") == DurationEstimate(mean_s=1.0, p90_s=3.0, samples=0)
    assert m.names() == []


def test_model_shrinks_toward_prior_with_few_samples():
    m = _model()
    m.observe("search", 11.0)  # n=1, w=5: (5*1 + 11) / 6
    e = m.estimate("search")
    assert e.samples == 1
    assert e.mean_s == pytest.approx(16 / 6)
    assert e.p90_s == pytest.approx((5 * 3.0 + 11.0) / 6)
    m.observe("search", 1.0)  # exact p90 of [1, 11] = 10
    e = m.estimate("search")
    assert e.mean_s == pytest.approx((5 * 1.0 + 12.0) / 7)
    assert e.p90_s == pytest.approx((5 * 3.0 + 2 * 10.0) / 7)


def test_model_converges_with_many_samples():
    r = random.Random(42)
    m = _model()
    xs = [r.expovariate(1 / 2.0) for _ in range(20_000)]
    for x in xs:
        m.observe("calc", x)
    e = m.estimate("calc")
    assert e.samples == 20_000
    assert e.mean_s == pytest.approx(sum(xs) / len(xs), rel=0.01)
    assert e.p90_s == pytest.approx(_exact(xs, 0.9), rel=0.03)


def test_model_zero_prior_weight_is_the_data():
    m = _model(prior_weight=0.0)
    m.observe("a", 4.0)
    assert m.estimate("a") == DurationEstimate(4.0, 4.0, 1)


def test_model_max_names():
    m = _model(max_names=2)
    m.observe("a", 1.0)
    m.observe("b", 2.0)
    m.observe("c", 9.0)
    m.observe("c", 9.0)
    m.observe("a", 1.0)  # known names still update
    assert m.names() == ["a", "b"]
    assert m.dropped_names == 2
    assert m.estimate("c").samples == 0 and m.estimate("c").mean_s == 1.0
    assert m.estimate("a").samples == 2


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, -math.inf, None, "1.0", True])
def test_model_rejects_invalid_durations(bad):
    m = _model()
    with pytest.raises(ValueError):
        m.observe("a", bad)
    assert m.names() == [] and m.dropped_names == 0


def test_model_accepts_zero_duration():
    m = _model(prior_weight=0.0)
    m.observe("a", 0)
    assert m.estimate("a").mean_s == 0.0


def test_model_round_trip():
    r = random.Random(3)
    m = _model(max_names=3)
    for name, n in (("a", 2), ("b", 7), ("c", 300), ("d", 4)):
        for _ in range(n):
            m.observe(name, r.lognormvariate(0, 1))
    state = json.loads(json.dumps(m.to_dict()))
    back = DurationModel.from_dict(state, 1.0, 3.0, 5.0, 3)
    assert back.names() == m.names() and back.dropped_names == m.dropped_names == 4
    for name in ("a", "b", "c", "d", "zzz"):
        assert back.estimate(name) == m.estimate(name)


@pytest.mark.parametrize(
    "bad",
    [
        None, [], {}, {"names": {}}, {"dropped_names": -1, "names": {}},
        {"dropped_names": 0, "names": []},
        {"dropped_names": 0, "names": {"a": "garbage"}},
        {"dropped_names": 0, "names": {"a": {"count": 1}}},
    ],
)
def test_model_from_dict_garbage(bad):
    with pytest.raises(ValueError):
        DurationModel.from_dict(bad, 1.0, 3.0, 5.0, 10)


def test_model_from_dict_too_many_names():
    m = _model()
    for name in "abc":
        m.observe(name, 1.0)
    with pytest.raises(ValueError):
        DurationModel.from_dict(m.to_dict(), 1.0, 3.0, 5.0, 2)


def test_model_rejects_bad_config():
    with pytest.raises(ValueError):
        _model(prior_mean_s=-1.0)
    with pytest.raises(ValueError):
        _model(max_names=-1)
