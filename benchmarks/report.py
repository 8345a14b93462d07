"""Writing a run's results: results.json, requests.csv, PNG plots, the summary table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from benchmarks.metrics import RequestRecord

RESULTS_SCHEMA_PATH = Path(__file__).with_name("results.schema.json")


def results_object(workload: dict[str, Any], config: str, rate_rps: float,
                   summary: dict[str, Any], slo_targets: dict[str, Any] | None = None,
                   slo_targets_source: str | None = None) -> dict[str, Any]:
    """One run's results.json; ``slo_targets`` (seconds, by class) are those the summary's
    attainment was computed against, ``slo_targets_source`` "server" or "defaults"."""
    out = {"workload": workload, "config": config, "rate_rps": rate_rps, "summary": summary}
    if slo_targets is not None:
        out.update(slo_targets=slo_targets, slo_targets_source=slo_targets_source)
    return out


def write_run(out_dir: Path, result: dict[str, Any], records: list[RequestRecord]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    rows = [r.row() for r in records]
    with open(out_dir / "requests.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["request_id"])
        writer.writeheader()
        writer.writerows(rows)
    plot_run(out_dir, records, result["summary"])


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _cdf(ax, values: list[float], label: str) -> None:
    xs = sorted(values)
    if xs:
        ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)


def plot_run(out_dir: Path, records: list[RequestRecord], summary: dict[str, Any]) -> None:
    plt = _plt()
    ok = [r for r in records if r.ok]
    for name, values, xlabel in (
            ("latency_cdf.png", [r.e2e_s for r in ok if r.e2e_s is not None],
             "end-to-end latency (s)"),
            ("ttft_cdf.png", [r.ttft_s for r in ok if r.ttft_s is not None], "time to first token (s)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        _cdf(ax, values, f"{len(values)} requests")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
    per_class = summary.get("slo_attainment_per_class") or {}
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(list(per_class), [v * 100 for v in per_class.values()])
    ax.set_ylabel("SLO attainment (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"overall {summary.get('slo_attainment', 0) * 100:.0f}%")
    fig.tight_layout()
    fig.savefig(out_dir / "slo_attainment.png", dpi=100)
    plt.close(fig)


def _by_rate(ax, results: list[dict[str, Any]], configs: list[str], value) -> None:
    """One line per config (same colour in every subplot): ``value(summary)`` vs rate."""
    for i, cfg in enumerate(configs):
        pts = sorted((r["rate_rps"], value(r["summary"])) for r in results if r["config"] == cfg)
        pts = [p for p in pts if p[1] is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=f"C{i}",
                    label=Path(cfg).stem)
    ax.set_xlabel("arrival rate (req/s, trace time)")
    ax.grid(alpha=0.3)


def plot_compare(out_dir: Path, results: list[dict[str, Any]]) -> None:
    """``compare.png`` (latencies, attainment, goodput) and ``compare_slo.png`` (attainment
    of each SLO class and goodput), against rate, one line per config."""
    plt = _plt()
    configs = sorted({r["config"] for r in results})
    metrics = [("p50_e2e_s", "p50 end-to-end (s)"), ("p90_e2e_s", "p90 end-to-end (s)"),
               ("mean_ttft_s", "mean TTFT (s)"), ("mean_normalized_latency_s",
                                                   "mean normalized latency (s/token)"),
               ("slo_attainment", "SLO attainment"), ("goodput_rps", "goodput (req/s)")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, label) in zip(axes.flat, metrics):
        _by_rate(ax, results, configs, lambda s, key=key: s.get(key))
        ax.set_ylabel(label)
        if key == "slo_attainment":
            ax.set_ylim(0, 1.05)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "compare.png", dpi=100)
    plt.close(fig)

    classes = sorted({c for r in results for c in r["summary"].get("slo_attainment_per_class", {})})
    fig, axes = plt.subplots(1, len(classes) + 1, figsize=(4.3 * (len(classes) + 1), 3.8),
                             squeeze=False)
    for ax, cls in zip(axes.flat, classes):
        _by_rate(ax, results, configs,
                 lambda s, cls=cls: s.get("slo_attainment_per_class", {}).get(cls))
        ax.set_title(f"class {cls}")
        ax.set_ylabel("SLO attainment")
        ax.set_ylim(0, 1.05)
    _by_rate(axes.flat[-1], results, configs, lambda s: s.get("goodput_rps"))
    axes.flat[-1].set_title("goodput")
    axes.flat[-1].set_ylabel("requests meeting their SLO per s")
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "compare_slo.png", dpi=100)
    plt.close(fig)


def summary_table(result: dict[str, Any]) -> str:
    s = result["summary"]

    def f(key: str, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
        v = s.get(key)
        return "-" if v is None else fmt.format(v * scale)
    lines = [f"config {result['config']}  rate {result['rate_rps']} req/s  "
             f"({s['completed']} completed, {s['failed']} failed, {s['duration_s']:.1f} s)",
             "| e2e mean / p50 / p90 / p99 s | TTFT mean / p99 s | TPOT mean ms | "
             "normalized s/token | SLO attainment | goodput req/s | output tok/s |",
             "|---|---|---|---|---|---|---|",
             f"| {f('mean_e2e_s')} / {f('p50_e2e_s')} / {f('p90_e2e_s')} / {f('p99_e2e_s')} "
             f"| {f('mean_ttft_s')} / {f('p99_ttft_s')} | {f('mean_tpot_s', 1000, '{:.2f}')} "
             f"| {f('mean_normalized_latency_s', 1, '{:.4f}')} | {f('slo_attainment', 100, '{:.1f}%')} "
             f"| {f('goodput_rps', 1, '{:.2f}')} | {f('output_tokens_per_s', 1, '{:.0f}')} |"]
    per_class = s.get("slo_attainment_per_class") or {}
    if per_class:
        source = result.get("slo_targets_source")
        lines.append("SLO attainment per class: " + ", ".join(
            f"{c} {v * 100:.1f}%" for c, v in per_class.items())
            + f"; goodput {f('goodput_rps', 1, '{:.2f}')} req/s"
            + (f" (targets: {source})" if source else ""))
    if s.get("failures_by_status"):
        lines.append(f"failures by status: {s['failures_by_status']}"
                     + (f", by class: {s['failed_per_class']}" if s.get("failed_per_class")
                        else ""))
    return "\n".join(lines)


def compare_table(results: list[dict[str, Any]]) -> str:
    """One row per (config, rate): the figures the papers compare."""
    def f(v: Any, fmt: str = "{:.2f}") -> str:
        return "-" if v is None else fmt.format(v)
    lines = ["| config | rate | completed / failed | e2e mean / p99 s | TTFT mean / p99 s | "
             "normalized s/token | SLO attainment | output tok/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["summary"]
        lines.append(
            f"| {Path(r['config']).stem} | {r['rate_rps']:g} | {s['completed']} / {s['failed']} "
            f"| {f(s['mean_e2e_s'])} / {f(s['p99_e2e_s'])} | {f(s['mean_ttft_s'])} / "
            f"{f(s['p99_ttft_s'])} | {f(s['mean_normalized_latency_s'], '{:.4f}')} "
            f"| {s['slo_attainment'] * 100:.1f}% | {s['output_tokens_per_s']:.0f} |")
    return "\n".join(lines)
