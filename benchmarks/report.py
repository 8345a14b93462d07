"""Writing a run's results: results.json, requests.csv, PNG plots, the summary table."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from benchmarks.metrics import RequestRecord

RESULTS_SCHEMA_PATH = Path(__file__).with_name("results.schema.json")


def results_object(workload: dict[str, Any], config: str, rate_rps: float,
                   summary: dict[str, Any]) -> dict[str, Any]:
    return {"workload": workload, "config": config, "rate_rps": rate_rps, "summary": summary}


def write_run(out_dir: Path, result: dict[str, Any], records: list[RequestRecord],
              slo_targets: dict[str, Any]) -> None:
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
            ("latency_cdf.png", [r.e2e_s for r in ok], "end-to-end latency (s)"),
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


def plot_compare(out_dir: Path, results: list[dict[str, Any]]) -> None:
    plt = _plt()
    configs = sorted({r["config"] for r in results})
    metrics = [("p50_e2e_s", "p50 end-to-end (s)"), ("p90_e2e_s", "p90 end-to-end (s)"),
               ("mean_ttft_s", "mean TTFT (s)"), ("mean_normalized_latency_s",
                                                   "mean normalized latency (s/token)"),
               ("slo_attainment", "SLO attainment"), ("goodput_rps", "goodput (req/s)")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, label) in zip(axes.flat, metrics):
        for cfg in configs:
            pts = sorted((r["rate_rps"], r["summary"].get(key)) for r in results
                         if r["config"] == cfg and r["summary"].get(key) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=Path(cfg).stem)
        ax.set_xlabel("arrival rate (req/s, trace time)")
        ax.set_ylabel(label)
        if key == "slo_attainment":
            ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "compare.png", dpi=100)
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
    if s.get("failures_by_status"):
        lines.append(f"failures by status: {s['failures_by_status']}")
    return "\n".join(lines)
