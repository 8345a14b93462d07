"""``augserve bench run`` and ``augserve bench compare``."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from benchmarks.client import EndpointError, probe, run_workload
from benchmarks.generators import arrivals, infercept_workload
from benchmarks.metrics import summarize
from benchmarks.report import plot_compare, results_object, summary_table, write_run
from benchmarks.trace import load_trace
from benchmarks.workload import Workload, WorkloadError, load_jsonl

DEFAULT_SLO_SHARES = {"interactive": 0.2, "standard": 0.5, "batch": 0.3}


def slo_targets_s() -> dict[str, dict[str, float | None]]:
    """The server's default SLO classes, in seconds."""
    from orchestrator.config import default_slo_classes
    return {name: {"ttft_s": c.ttft_ms / 1000 if c.ttft_ms else None,
                   "e2e_s": c.e2e_ms / 1000 if c.e2e_ms else None}
            for name, c in default_slo_classes().items()}


def parse_shares(text: str | None) -> dict[str, float]:
    if not text:
        return dict(DEFAULT_SLO_SHARES)
    shares = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        shares[name.strip()] = float(value)
    return shares


def tokenize_fn(path: str | None):
    """text -> token ids with the tokenizer at ``path`` (default: the tiny model)."""
    from transformers import AutoTokenizer

    from replicas.config import default_model_path
    tok = AutoTokenizer.from_pretrained(path or str(default_model_path()))
    return lambda text: tok.encode(text, add_special_tokens=False)


def load_workload(spec: str, tokenizer_path: str | None, limit: int | None, seed: int) -> Workload:
    if spec.startswith("infercept"):
        return infercept_workload(limit or 100, seed)
    if not Path(spec).is_file():
        raise WorkloadError(f"workload file not found: {spec}")
    if spec.endswith(".jsonl"):
        return load_jsonl(spec)
    return load_trace(spec, tokenize_fn(tokenizer_path))


def prepare(workload: Workload, *, max_context: int, limit: int | None, seed: int,
            time_scale: float, rate_rps: float, arrival: str, cv: float,
            slo_shares: dict[str, float]) -> Workload:
    """Fit to the context, subset, scale time, assign arrivals (unless given) and SLOs."""
    fits = [r for r in workload.requests if r.total_context_tokens(
        len(r.prompt_token_ids or ()) or 1) <= max_context]
    dropped = len(workload.requests) - len(fits)
    w = Workload(workload.name, fits, {**workload.meta, "dropped_over_context": dropped,
                                       "max_context_tokens": max_context})
    w = w.subset(limit, seed)
    if any(r.arrival_s is None for r in w.requests):
        # the rate is in trace time; scaling below shrinks gaps and API times alike
        w = w.with_arrivals(arrivals(arrival, len(w.requests), rate_rps, seed, cv))
        w.meta.update(arrival=arrival, seed=seed, effective_rate_rps=rate_rps / time_scale,
                      **({"cv": cv} if arrival == "gamma" else {}))
    w = w.scaled(time_scale)
    return w.with_slo_classes(slo_shares, seed)


async def _run(url: str, model: str, workload: Workload, progress: bool):
    from tqdm import tqdm
    bar = tqdm(total=len(workload.requests), unit="req", disable=not progress, file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        records, duration = await run_workload(url, model, workload,
                                               on_done=lambda r: bar.update(1), stop=stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        bar.close()
    return records, duration, stop.is_set()


def run_once(url: str, info: dict[str, Any], workload: Workload, rate: float, out_dir: Path,
             args: argparse.Namespace, config_label: str) -> dict[str, Any]:
    """One replay; ``info`` is the endpoint's model entry from :func:`probe`."""
    w = prepare(workload, max_context=int(info.get("max_model_len") or 1 << 30),
                limit=args.limit, seed=args.seed, time_scale=args.time_scale, rate_rps=rate,
                arrival=args.arrival, cv=args.cv, slo_shares=parse_shares(args.slo_shares))
    records, duration, stopped = asyncio.run(_run(url, info["id"], w, not args.no_progress))
    targets = slo_targets_s()
    summary = summarize(records, targets, duration)
    result = results_object({**w.describe(), "stopped_early": stopped}, config_label, rate, summary)
    write_run(out_dir, result, records, targets)
    print(summary_table(result))
    replica_stats(url, out_dir)
    print(f"wrote {out_dir}/results.json, requests.csv, latency_cdf.png, ttft_cdf.png, "
          "slo_attainment.png")
    return result


REPLICA_COUNTERS = ("calls_preserve", "calls_discard", "calls_swap", "num_demotions",
                    "recomputed_tokens", "num_starvation_promotions", "score_ms_per_step_p50",
                    "profile_a_ms_per_token", "profile_c_ms", "profile_saturation_tokens")


def replica_stats(url: str, out_dir: Path) -> None:
    """Save each replica's policy counters (cumulative since the app started) beside the
    results, as ``replicas.json``, and print them; a server without them is skipped."""
    import httpx
    try:
        replicas = httpx.get(f"{url}/v1/admin/queue", timeout=10).json().get("replicas", [])
    except (httpx.HTTPError, ValueError):
        return
    rows = [{"deployment": r.get("deployment"), **{k: r.get("extra", {}).get(k)
                                                   for k in REPLICA_COUNTERS}} for r in replicas]
    (out_dir / "replicas.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print("replica " + ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                                     for k, v in row.items()))


def main_run(args: argparse.Namespace) -> int:
    try:
        info = asyncio.run(probe(args.url))  # an unreachable URL fails before any work
        if args.time_scale is None:
            args.time_scale = 1.0
        workload = load_workload(args.workload, args.tokenizer, args.limit, args.seed)
        run_once(args.url, info, workload, args.rate, Path(args.out), args, args.config_label)
    except (WorkloadError, EndpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def compare_defaults(config_path: str) -> dict:
    """The ``bench`` block of a Serve config's application args (empty when absent)."""
    import yaml
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    apps = raw.get("applications") or [{}]
    return dict((apps[0].get("args") or {}).get("bench") or {})


def main_compare(args: argparse.Namespace) -> int:
    from orchestrator import serving
    configs = [c for c in args.configs.split(",") if c]
    try:
        defaults = compare_defaults(configs[0]) if configs else {}
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.rates is None:
        args.rates = ",".join(str(r) for r in defaults.get("rates", [1, 2, 4]))
    if args.time_scale is None:
        args.time_scale = float(defaults.get("time_scale", 1.0))
    if args.limit is None:
        args.limit = defaults.get("limit")
    rates = [float(r) for r in args.rates.split(",")]
    out = Path(args.out)
    try:  # fail on a bad workload before starting any deployment
        workload = load_workload(args.workload, args.tokenizer, args.limit, args.seed)
        schemas = {c: serving.load_serve_config(c) for c in configs}
    except (WorkloadError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = []
    for config in configs:
        schema = schemas[config]
        serving.start_ray()
        try:
            serving.deploy(schema)
            http = schema.http_options
            url = f"http://{http.host}:{http.port}"
            info = asyncio.run(probe(url))
            for rate in rates:
                run_dir = out / Path(config).stem / f"rate-{rate:g}"
                results.append(run_once(url, info, workload, rate, run_dir, args, config))
        finally:
            serving.shutdown()
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=2))
    plot_compare(out, results)
    print(f"wrote {out}/compare.json and {out}/compare.png")
    return 0


def add_workload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", required=True,
                   help="trace .json (LAMPS format), workload .jsonl, or 'infercept'")
    p.add_argument("--limit", type=int, default=None,
                   help="requests drawn by --seed (compare: default the config's bench.limit)")
    p.add_argument("--time-scale", type=float, default=None,
                   help="multiply API durations and arrival gaps by this factor (default: the "
                   "first config's bench.time_scale in compare, else 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arrival", choices=["poisson", "gamma"], default="poisson")
    p.add_argument("--cv", type=float, default=2.0, help="gamma arrivals: coefficient of variation")
    p.add_argument("--slo-shares", default=None,
                   help="e.g. interactive=0.2,standard=0.5,batch=0.3 (targets: server defaults)")
    p.add_argument("--tokenizer", default=None, help="tokenizer for text traces (default: tiny model)")
    p.add_argument("--no-progress", action="store_true")
