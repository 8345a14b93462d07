"""``augserve bench run`` and ``augserve bench compare``.

A replay's workload settings (time scale, limit, arrival process, SLO shares) are the
flags; in ``compare`` each flag not given takes the first config's ``bench`` block
(:class:`orchestrator.config.BenchDefaults`), so that a config's block alone reproduces
its benchmark.  SLO targets are the server's (:mod:`benchmarks.slo`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.client import EndpointError, probe, run_workload
from benchmarks.generators import ARRIVAL_KINDS, ArrivalProcess, infercept_workload
from benchmarks.metrics import summarize
from benchmarks.report import (compare_table, plot_compare, results_object, summary_table,
                               write_run)
from benchmarks.slo import (DEFAULT_SLO_SHARES, SettingsError, SLOTargets, check_shares,
                            fetch_slo_targets, parse_shares)
from benchmarks.trace import load_trace
from benchmarks.workload import Workload, WorkloadError, load_jsonl

if TYPE_CHECKING:
    from orchestrator.config import BenchDefaults

#: What a workload flag left unset means when no bench block sets it either.
FLAG_DEFAULTS: dict[str, Any] = {"time_scale": 1.0, "arrival": "poisson", "cv": 2.0,
                                 "burst_factor": 4.0, "burst_period_s": 60.0, "burst_duty": 0.25}


@dataclass(frozen=True)
class ReplaySettings:
    """How a workload is replayed: the flags, completed by a config's bench block."""

    time_scale: float
    limit: int | None
    seed: int
    arrival: ArrivalProcess
    slo_shares: dict[str, float]
    progress: bool = False


def resolve_settings(args: argparse.Namespace, bench: BenchDefaults | None = None
                     ) -> ReplaySettings:
    """Each workload flag left unset (None) takes the bench block's value, else its
    :data:`FLAG_DEFAULTS` value (``bench run`` has no bench block); the result is checked
    by the bench block's own rules.  Raises :class:`SettingsError`."""
    from pydantic import ValidationError

    from orchestrator.config import BenchDefaults
    bench = bench or BenchDefaults()
    values: dict[str, Any] = {}
    for key in ("time_scale", "limit", "arrival", "cv", "burst_factor", "burst_period_s",
                "burst_duty"):
        value = getattr(args, key)
        if value is None:
            value = getattr(bench, key)
        values[key] = FLAG_DEFAULTS.get(key) if value is None else value
    shares = (parse_shares(args.slo_shares) if args.slo_shares else
              dict(bench.slo_shares or DEFAULT_SLO_SHARES))
    try:
        BenchDefaults.model_validate({**values, "slo_shares": shares})
    except ValidationError as exc:
        raise SettingsError(f"bad workload settings: {exc}") from None
    arrival = ArrivalProcess(values["arrival"], values["cv"], values["burst_factor"],
                             values["burst_period_s"], values["burst_duty"])
    return ReplaySettings(values["time_scale"], values["limit"], args.seed, arrival, shares,
                          progress=not args.no_progress)


def tokenize_fn(path: str | None):
    """text -> token ids with the tokenizer at ``path`` (default: the tiny model).  A
    directory with a ``tokenizer.json`` is read by ``tokenizers`` alone (the same fast
    tokenizer that ``AutoTokenizer`` wraps, without importing ``transformers``, ~8 s here)."""
    from replicas.config import default_model_path
    directory = Path(path or str(default_model_path()))
    if (directory / "tokenizer.json").is_file():
        from tokenizers import Tokenizer
        fast = Tokenizer.from_file(str(directory / "tokenizer.json"))
        return lambda text: fast.encode(text, add_special_tokens=False).ids
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(directory))
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
            time_scale: float, rate_rps: float, arrival: ArrivalProcess,
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
        w = w.with_arrivals(arrival.times(len(w.requests), rate_rps, seed))
        w.meta.update(seed=seed, effective_rate_rps=rate_rps / time_scale,
                      mean_effective_rate_rps=arrival.mean_rate_rps(rate_rps) / time_scale,
                      **arrival.describe())
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
             settings: ReplaySettings, slo: SLOTargets, config_label: str) -> dict[str, Any]:
    """One replay; ``info`` is the endpoint's model entry from :func:`probe`, ``slo`` its
    SLO classes from :func:`fetch_slo_targets`."""
    w = prepare(workload, max_context=int(info.get("max_model_len") or 1 << 30),
                limit=settings.limit, seed=settings.seed, time_scale=settings.time_scale,
                rate_rps=rate, arrival=settings.arrival, slo_shares=settings.slo_shares)
    records, duration, stopped = asyncio.run(_run(url, info["id"], w, settings.progress))
    summary = summarize(records, slo.targets_s, duration)
    result = results_object({**w.describe(), "stopped_early": stopped}, config_label, rate,
                            summary, slo.targets_s, slo.source)
    write_run(out_dir, result, records)
    print(summary_table(result))
    replica_stats(url, out_dir)
    print(f"wrote {out_dir}/results.json, requests.csv, queue.json, replicas.json, "
          "latency_cdf.png, ttft_cdf.png, slo_attainment.png")
    return result


def server_slo(url: str, settings: ReplaySettings) -> SLOTargets:
    """The server's SLO targets, after checking that the shares name only its classes."""
    slo = fetch_slo_targets(url)
    if slo.source != "server":
        print(f"SLO targets: the default classes ({slo.note})", file=sys.stderr)
    check_shares(settings.slo_shares, slo.targets_s, slo.describe())
    return slo


REPLICA_COUNTERS = ("calls_preserve", "calls_discard", "calls_swap", "num_demotions",
                    "recomputed_tokens", "num_starvation_promotions", "score_ms_per_step_p50",
                    "profile_a_ms_per_token", "profile_c_ms", "profile_saturation_tokens")


def replica_stats(url: str, out_dir: Path) -> None:
    """Save the queue manager's state (``queue.json``: estimator error, SLO attainment per
    class, counters, durability) and each replica's policy counters (cumulative since the
    app started, ``replicas.json``) beside the results, and print them; a server without
    them is skipped."""
    import httpx
    try:
        state = httpx.get(f"{url}/v1/admin/queue", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return
    (out_dir / "queue.json").write_text(json.dumps(state, indent=2))
    est = state.get("estimator") or {}
    if est:
        print(f"queue manager: policy {state.get('policy')}, estimator error median "
              f"{est.get('estimator_error_median')}, p90 {est.get('estimator_error_p90')} "
              f"({est.get('estimator_scored')} scored); counters {state.get('counters')}")
    replicas = state.get("replicas", [])
    rows = [{"deployment": r.get("deployment"), **{k: r.get("extra", {}).get(k)
                                                   for k in REPLICA_COUNTERS}} for r in replicas]
    (out_dir / "replicas.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print("replica " + ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                                     for k, v in row.items()))


def main_run(args: argparse.Namespace) -> int:
    try:
        settings = resolve_settings(args)
        info = asyncio.run(probe(args.url))  # an unreachable URL fails before any work
        slo = server_slo(args.url, settings)
        workload = load_workload(args.workload, args.tokenizer, settings.limit, args.seed)
        run_once(args.url, info, workload, args.rate, Path(args.out), settings, slo,
                 args.config_label)
    except (WorkloadError, EndpointError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def compare_defaults(config_path: str) -> BenchDefaults | None:
    """The validated ``bench`` block of a Serve config's first application (None when
    absent); raises :class:`SettingsError` naming the file."""
    import yaml
    from pydantic import ValidationError

    from orchestrator.config import BenchDefaults
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    apps = raw.get("applications") or [{}]
    block = (apps[0].get("args") or {}).get("bench")
    try:
        return None if block is None else BenchDefaults.model_validate(block)
    except ValidationError as exc:
        raise SettingsError(f"{config_path}: bench block: {exc}") from None


def compare_rates(args: argparse.Namespace, bench: BenchDefaults | None) -> list[float]:
    if args.rates is not None:
        try:
            return [float(r) for r in args.rates.split(",")]
        except ValueError:
            raise SettingsError(f"--rates: not a comma-separated list of numbers: "
                                f"{args.rates!r}") from None
    return list(bench.rates) if bench else [1.0, 2.0, 4.0]


def config_slo_classes(schema: Any) -> set[str]:
    """The SLO classes a validated Serve config's augserve applications define."""
    from orchestrator.config import AppConfig
    return {name for app in schema.applications
            if app.import_path.startswith("orchestrator.app:")
            for name in AppConfig.model_validate(app.args or {}).slo_classes}


def main_compare(args: argparse.Namespace) -> int:
    from orchestrator import serving
    configs = [c for c in args.configs.split(",") if c]
    out = Path(args.out)
    try:  # fail on bad settings or a bad workload before starting any deployment
        bench = compare_defaults(configs[0]) if configs else None
        settings = resolve_settings(args, bench)
        rates = compare_rates(args, bench)
        workload = load_workload(args.workload, args.tokenizer, settings.limit, args.seed)
        schemas = {c: serving.load_serve_config(c) for c in configs}
        for config, schema in schemas.items():
            check_shares(settings.slo_shares, config_slo_classes(schema),
                         f"{config} defines")
    except (WorkloadError, SettingsError, ValueError, OSError) as exc:
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
            slo = server_slo(url, settings)
            for rate in rates:
                run_dir = out / Path(config).stem / f"rate-{rate:g}"
                results.append(run_once(url, info, workload, rate, run_dir, settings, slo,
                                        config))
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            serving.shutdown()
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=2))
    plot_compare(out, results)
    print(compare_table(results))
    print(f"wrote {out}/compare.json, {out}/compare.png and {out}/compare_slo.png")
    return 0


def add_workload_args(p: argparse.ArgumentParser) -> None:
    """The workload flags; those defaulting to None take, in ``compare``, the first
    config's ``bench`` block, else :data:`FLAG_DEFAULTS`."""
    p.add_argument("--workload", required=True,
                   help="trace .json (LAMPS format), workload .jsonl, or 'infercept'")
    p.add_argument("--limit", type=int, default=None,
                   help="requests drawn by --seed (compare: default the config's bench.limit)")
    p.add_argument("--time-scale", type=float, default=None,
                   help="multiply API durations and arrival gaps by this factor (default: the "
                   "first config's bench.time_scale in compare, else 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arrival", choices=list(ARRIVAL_KINDS), default=None,
                   help="arrival process of requests without arrival times (default: "
                   "bench.arrival in compare, else poisson); bursty: Poisson at rate × "
                   "burst-factor during the first burst-duty of every burst-period-s, at rate "
                   "otherwise, so the mean rate is rate × (1 + duty × (factor − 1))")
    p.add_argument("--cv", type=float, default=None,
                   help="gamma arrivals: coefficient of variation of the gaps (default 2)")
    p.add_argument("--burst-factor", type=float, default=None,
                   help="bursty arrivals: rate multiplier in a burst, ≥ 1 (default 4)")
    p.add_argument("--burst-period-s", type=float, default=None,
                   help="bursty arrivals: a burst starts every this many trace seconds "
                   "(scaled by --time-scale like the gaps; default 60)")
    p.add_argument("--burst-duty", type=float, default=None,
                   help="bursty arrivals: fraction of each period in the burst, in (0, 1] "
                   "(default 0.25: with factor 4 the mean rate is 1.75 × rate)")
    p.add_argument("--slo-shares", default=None,
                   help="e.g. interactive=0.2,standard=0.5,batch=0.3 (the default; compare: "
                   "bench.slo_shares); classes and targets are the server's "
                   "(GET /v1/admin/slo_classes, else its defaults)")
    p.add_argument("--tokenizer", default=None, help="tokenizer for text traces (default: tiny model)")
    p.add_argument("--no-progress", action="store_true")
