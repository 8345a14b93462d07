"""The Grafana dashboard queries only metrics the code registers, under the names Ray
exports them by, and docs/metrics.md lists every registered metric.

What the code registers is found, not listed: an ``ast`` scan of the metric packages finds
every class that calls ``ray.util.metrics.Counter/Gauge/Histogram``; each is then built with
a recording fake of those three classes patched in, so names built from dicts or loops
(``replicas/metrics.py``) are collected exactly as the running code would register them.
A call the scan finds outside a class it can build fails the test instead of being missed.

Ray 2.60 exports a metric ``X`` as ``ray_X`` (a counter not ending in ``_total`` gets
``_total`` appended) and a histogram as ``ray_X_bucket`` / ``ray_X_sum`` / ``ray_X_count``
(docs/metrics.md, measured against a running Ray).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import sys
from dataclasses import dataclass, field

import pytest

from orchestrator.serving import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "augserve-dashboard.json"
METRICS_DOC = REPO_ROOT / "docs" / "metrics.md"
METRIC_PACKAGES = ("orchestrator", "replicas", "predictor_service")
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram"}
RAY_PREFIX = "ray_"
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
DATASOURCE_UID = "${DS_PROMETHEUS}"

#: Panels the monitoring issue asks for: title keywords -> a metric the panel must query.
REQUIRED_PANELS = {
    ("request rate", "outcome"): "augserve_requests_total",
    ("ttft",): "augserve_ttft_seconds",
    ("end-to-end",): "augserve_e2e_seconds",
    ("slo attainment",): "augserve_slo_requests_total",
    ("queue length", "group"): "augserve_queue_group_length",
    ("kv usage", "replica"): "augserve_replica_kv_usage",
    ("paused sessions", "replica"): "augserve_replica_paused_sessions",
    ("predictor error",): "augserve_predictor_abs_error_tokens",
}


# --- what the code registers ---------------------------------------------------------

@dataclass(frozen=True)
class Registered:
    name: str
    kind: str
    tag_keys: tuple[str, ...]

    @property
    def family(self) -> str:
        """The name Prometheus sees (a histogram's series add _bucket, _sum or _count)."""
        total = self.kind == "counter" and not self.name.endswith("_total")
        return f"{RAY_PREFIX}{self.name}{'_total' if total else ''}"


@dataclass
class _Recorder:
    metrics: dict[str, Registered] = field(default_factory=dict)
    values: dict[str, list[tuple[str, float, dict]]] = field(default_factory=dict)

    def fake(self, kind: str):
        recorder = self

        class FakeMetric:
            def __init__(self, name: str, description: str = "", *args, tag_keys=(), **kw):
                new = Registered(name, kind, tuple(tag_keys or ()))
                old = recorder.metrics.setdefault(name, new)
                assert old == new, f"{name} registered twice, as {old} and {new}"
                self._values = recorder.values.setdefault(name, [])

            def inc(self, value: float = 1.0, tags: dict | None = None) -> None:
                self._values.append(("inc", value, tags or {}))

            def set(self, value: float, tags: dict | None = None) -> None:
                self._values.append(("set", value, tags or {}))

            def observe(self, value: float, tags: dict | None = None) -> None:
                self._values.append(("observe", value, tags or {}))

            def set_default_tags(self, tags: dict) -> None:
                pass

        return FakeMetric


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def metric_call_sites() -> dict[str, set[str | None]]:
    """Module -> names of the classes whose code calls a Ray metric constructor (None for a
    call outside any class)."""
    sites: dict[str, set[str | None]] = {}
    for package in METRIC_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            imported = {a.asname or a.name for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) and n.module == "ray.util.metrics"
                        for a in n.names if a.name in KINDS}
            module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)

            def visit(node: ast.AST, cls: str | None) -> None:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.Call):
                        f = _dotted(child.func)
                        owner, _, attr = f.rpartition(".")
                        if attr in KINDS and owner.endswith("metrics") or f in imported:
                            sites.setdefault(module, set()).add(cls)
                    visit(child, child.name if isinstance(child, ast.ClassDef) else cls)

            visit(tree, None)
    return sites


def _patch_ray_metrics(mp: pytest.MonkeyPatch, rec: _Recorder) -> None:
    import ray
    import ray.util.metrics as ray_metrics

    mp.setattr(ray, "is_initialized", lambda: True)  # the predictor registers only in Ray
    for attr, kind in KINDS.items():
        original = getattr(ray_metrics, attr)
        mp.setattr(ray_metrics, attr, rec.fake(kind))
        for module in METRIC_PACKAGES:  # `from ray.util.metrics import Counter` binds early
            for name, mod in list(sys.modules.items()):
                if name.startswith(f"{module}.") and getattr(mod, attr, None) is original:
                    mp.setattr(mod, attr, getattr(ray_metrics, attr))


@pytest.fixture(scope="module")
def recorder() -> _Recorder:
    """Every metric the code registers, by building each class that registers one."""
    rec = _Recorder()
    sites = metric_call_sites()
    for module_name in sites:
        importlib.import_module(module_name)
    with pytest.MonkeyPatch.context() as mp:
        _patch_ray_metrics(mp, rec)
        for module_name, classes in sites.items():
            assert None not in classes, f"{module_name} registers a metric outside a class"
            for name in sorted(classes):
                cls = getattr(sys.modules[module_name], name)
                required = [p for p in inspect.signature(cls).parameters.values()
                            if p.default is p.empty
                            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
                assert not required, f"{module_name}.{name} needs arguments: extend this test"
                cls()
    return rec


@pytest.fixture(scope="module")
def registry(recorder: _Recorder) -> dict[str, Registered]:
    return recorder.metrics


# --- reading PromQL ------------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[\w$]+")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(([^,()]*),\s*\w+\s*\)")
_IDENT = re.compile(r"(?<![\w.$:])[A-Za-z_:][\w:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
             "or", "unless", "offset", "inf", "nan"}


def metric_names_in(expr: str) -> set[str]:
    """The metric names an expression (or a Grafana ``label_values(...)`` query) selects:
    identifiers left once strings, label matchers, ranges, grouping clauses and offsets are
    removed, except function names (followed by ``(``) and keywords."""
    text = _MATCHERS.sub(" ", _STRING.sub('""', expr))
    text = _LABEL_VALUES.sub(r"\1", text)
    for pattern in (_RANGE, _GROUPING, _OFFSET):
        text = pattern.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        if text[m.end():].lstrip().startswith("(") or m.group().lower() in _KEYWORDS:
            continue
        names.add(m.group())
    return names


def resolve(series: str, registry: dict[str, Registered]) -> tuple[Registered | None, str]:
    """The registered metric behind an exported series name, or None and why not."""
    if not series.startswith(RAY_PREFIX):
        return None, f"{series}: Ray exports custom metrics with the prefix {RAY_PREFIX!r}"
    families = {m.family: m for m in registry.values()}
    if series in families:
        m = families[series]
        if m.kind == "histogram":
            return None, f"{series} is a histogram: query {series}_bucket, _sum or _count"
        return m, ""
    for suffix in HISTOGRAM_SUFFIXES:
        m = families.get(series.removesuffix(suffix)) if series.endswith(suffix) else None
        if m is not None:
            if m.kind != "histogram":
                return None, f"{series}: {suffix} on a {m.kind}; only histograms have it"
            return m, ""
    return None, f"{series}: no metric of that name is registered by the code"


def problems_in(expr: str, registry: dict[str, Registered]) -> list[str]:
    problems = [why for name in sorted(metric_names_in(expr))
                for m, why in [resolve(name, registry)] if m is None]
    if not metric_names_in(expr):
        problems.append(f"{expr!r} selects no metric")
    if "_bucket" in expr and not ("histogram_quantile" in expr
                                  and re.search(r"\bby\s*\([^)]*\ble\b", expr)):
        problems.append(f"{expr!r}: read _bucket with histogram_quantile(q, sum by (le) ...)")
    return problems


# --- the dashboard -------------------------------------------------------------------

def _load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def _queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every templating query."""
    out = [(f"{p['title']} / {t['refId']}", t["expr"])
           for p in _panels(dashboard) for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            out.append((f"variable {var['name']}", q["query"] if isinstance(q, dict) else q))
    return out


QUERIES = _queries(_load_dashboard())


def test_the_scan_finds_the_metrics_of_every_package(registry):
    modules = metric_call_sites()
    for package in METRIC_PACKAGES:
        assert any(m.startswith(f"{package}.") for m in modules), package
    assert {m.kind for m in registry.values()} == set(KINDS.values())


@pytest.mark.parametrize(("where", "expr"), QUERIES, ids=[w for w, _ in QUERIES])
def test_every_query_uses_registered_metrics_by_their_exported_names(registry, where, expr):
    assert problems_in(expr, registry) == []


def test_the_reader_ignores_functions_labels_strings_and_durations():
    expr = ('histogram_quantile(0.99, sum by (le, model) (rate(ray_a_bucket{model=~"$model", '
            'le!="+Inf", x="rate(y)"}[$__rate_interval] offset 1h))) / on (model) group_left '
            '(slo_class) max without (WorkerId) (label_replace(ray_b, "w", "$1", "WorkerId", '
            '"(.{8}).*")) > bool 1e3 and max_over_time(ray_c[5m:1m])')
    assert metric_names_in(expr) == {"ray_a_bucket", "ray_b", "ray_c"}
    assert metric_names_in('label_values(ray_d{x="1", y="a,b"}, model)') == {"ray_d"}


@pytest.mark.parametrize(("expr", "why"), [
    ("sum(rate(ray_augserve_no_such_metric_total[5m]))", "no metric of that name"),
    ("sum(rate(augserve_requests_total[5m]))", "prefix 'ray_'"),
    ("histogram_quantile(0.9, sum by (le) (rate(ray_augserve_queue_length_bucket[5m])))",
     "_bucket on a gauge"),
    ("rate(ray_augserve_requests_total_count[5m])", "_count on a counter"),
    ("ray_augserve_ttft_seconds", "is a histogram"),
    ("sum(rate(ray_augserve_ttft_seconds_bucket[5m]))", "histogram_quantile"),
    ("vector(1)", "selects no metric"),
])
def test_the_checker_rejects_bad_queries(registry, expr, why):
    problems = problems_in(expr, registry)
    assert any(why in p for p in problems), problems


def test_the_checker_accepts_the_three_kinds(registry):
    assert problems_in("sum(rate(ray_augserve_requests_total[5m])) + max(ray_augserve_in_flight)"
                       " + sum(rate(ray_augserve_e2e_seconds_sum[5m]))", registry) == []


@pytest.mark.parametrize(("keywords", "metric"), REQUIRED_PANELS.items(),
                         ids=[" ".join(k) for k in REQUIRED_PANELS])
def test_the_dashboard_has_the_panels_the_issue_asks_for(registry, keywords, metric):
    panels = [p for p in _panels(_load_dashboard())
              if all(k in p["title"].lower() for k in keywords)]
    assert panels, f"no panel titled with {keywords}"
    used = {resolve(n, registry)[0] for p in panels for t in p["targets"]
            for n in metric_names_in(t["expr"])}
    assert registry[metric] in used


def test_the_dashboard_is_importable():
    d = _load_dashboard()
    assert d["uid"] == "augserve" and d["title"] == "augserve" and d["schemaVersion"] >= 36
    ds = [v for v in d["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert ds and ds[0]["type"] == "datasource" and ds[0]["query"] == "prometheus"
    panels = _panels(d)
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, p["title"]
        assert p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
        assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]


# --- the docs ------------------------------------------------------------------------

def _doc_rows() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exported name -> (type, tags) of each row of the docs table."""
    rows = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`"):
            name = re.findall(r"`([^`]+)`", cells[0])[0]
            assert name not in rows, f"{name} is listed twice"
            rows[name] = (cells[1], tuple(re.findall(r"`([^`]+)`", cells[2])))
    return rows


def test_the_docs_table_lists_every_registered_metric_and_no_other(registry):
    rows = _doc_rows()
    expected = {m.family: (m.kind, m.tag_keys) for m in registry.values()}
    assert set(rows) == set(expected), (set(expected) - set(rows), set(rows) - set(expected))
    for name, (kind, tags) in rows.items():
        assert (kind, set(tags)) == (expected[name][0], set(expected[name][1])), name


# --- the KV usage gauge is fed ---------------------------------------------------------

def test_a_replica_report_publishes_its_kv_usage_and_counters(monkeypatch):
    from replicas.metrics import ReplicaMetrics
    from replicas.types import ReplicaLimits, ReplicaStats
    recorder = _Recorder()
    _patch_ray_metrics(monkeypatch, recorder)
    report = ReplicaStats(replica_id="r1", deployment="llm-small", gpu_class="small",
                          model="m", limits=ReplicaLimits(2, 0), kv_usage=0.25,
                          extra={"num_demotions": 3.0})
    ReplicaMetrics().publish(report, "lamps")
    tags = {"deployment": "llm-small", "replica": "r1", "policy": "lamps"}
    assert recorder.values["augserve_replica_kv_usage"][-1] == ("set", 0.25, tags)
    assert recorder.values["augserve_replica_demotions_total"][-1] == ("inc", 3.0, tags)
