"""``augserve simulate run|compare`` (see :mod:`simulator.run`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.report import compare_table, plot_compare
from benchmarks.runner import add_workload_args, compare_defaults, load_workload, resolve_settings
from benchmarks.slo import SettingsError, check_shares
from benchmarks.workload import WorkloadError
from simulator.profiles import ProfileError, parse_profile_spec
from simulator.run import SimOptions, run_once
from simulator.setup import SimConfigError, load_config

ERRORS = (WorkloadError, SettingsError, ProfileError, SimConfigError, ValueError, OSError)


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise SettingsError(f"--rates: not a comma-separated list of numbers: {text!r}") from None
    if not rates or any(not (r > 0) or r == float("inf") for r in rates):
        raise SettingsError(f"--rates: every rate must be a number > 0, got {text!r}")
    return rates


def _options(args: argparse.Namespace) -> SimOptions:
    if args.duration_s is not None and not (0 < args.duration_s < float("inf")):
        raise SettingsError(f"--duration-s must be > 0, got {args.duration_s}")
    if not 0 <= args.noise < 10:
        raise SettingsError(f"--noise must be in [0, 10), got {args.noise}")
    return SimOptions(args.profile, args.seed, args.oracle, args.noise, args.duration_s,
                      micro_steps=args.micro_steps)


def _prepare(args: argparse.Namespace, configs: list[str]):
    """Everything checked before anything runs: configs, profiles, settings, workload."""
    if not configs:
        raise SettingsError("no config given")
    cfgs = {c: load_config(c) for c in configs}
    if args.time_scale is None:  # simulated seconds are seconds: no bench-block time scale
        args.time_scale = 1.0
    bench = compare_defaults(configs[0])
    settings = resolve_settings(args, bench)
    rates = _rates(args.rates) if args.rates else list(bench.rates) if bench else [1.0]
    opts = _options(args)
    for path, cfg in cfgs.items():
        check_shares(settings.slo_shares, cfg.app.slo_classes, f"{path} defines")
        parse_profile_spec(opts.profile, cfg.gpu_classes)
    workload = load_workload(args.workload, args.tokenizer, settings.limit, args.seed)
    workload = _with_token_ids(workload, args.tokenizer)
    return cfgs, settings, rates, opts, workload


def _with_token_ids(workload, tokenizer: str | None):
    """Text prompts (JSONL ``prompt``) tokenized as the ingress would."""
    if all(r.prompt_token_ids is not None for r in workload.requests):
        return workload
    import dataclasses

    from benchmarks.runner import tokenize_fn
    from benchmarks.workload import Workload
    tok = tokenize_fn(tokenizer)
    reqs = [r if r.prompt_token_ids is not None else
            dataclasses.replace(r, prompt_token_ids=tuple(tok(r.prompt_text or "")) or (1,))
            for r in workload.requests]
    return Workload(workload.name, reqs, workload.meta)


def main_run(args: argparse.Namespace) -> int:
    try:
        cfgs, settings, rates, opts, workload = _prepare(args, [args.config])
        cfg = cfgs[args.config]
        out = Path(args.out)
        results = [run_once(cfg, workload, rate, settings, opts, out / f"rate-{rate:g}",
                            args.config) for rate in rates]
    except ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _write_compare(out, results)
    return 0


def main_compare(args: argparse.Namespace) -> int:
    configs = [c for c in args.configs.split(",") if c]
    try:
        cfgs, settings, rates, opts, workload = _prepare(args, configs)
        out = Path(args.out)
        results = [run_once(cfg, workload, rate, settings, opts,
                            out / Path(path).stem / f"rate-{rate:g}", path)
                   for path, cfg in cfgs.items() for rate in rates]
    except ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _write_compare(out, results)
    return 0


def main_fidelity(args: argparse.Namespace) -> int:
    from simulator import fidelity

    default = fidelity.QUICK_CONFIGS if args.quick else fidelity.FULL_CONFIGS
    configs = [c for c in (args.configs or ",".join(default)).split(",") if c]
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    try:
        if reps < 1:
            raise SettingsError(f"--reps must be >= 1, got {reps}")
        bench = compare_defaults(configs[0]) if configs else None
        if args.time_scale is None and bench is not None:  # both sides: the config's scale
            args.time_scale = bench.time_scale
        args.profile, args.duration_s, args.noise, args.oracle, args.micro_steps = (
            fidelity.CPU_PROFILE, None, 0.0, True, False)
        cfgs, settings, rates, _opts, workload = _prepare(args, configs)
        if args.quick and not args.rates:
            rates = rates[:1]
        out = Path(args.out)
        points = [fidelity.run_point(path, cfg, workload, rate, settings, reps,
                                     out / Path(path).stem / f"rate-{rate:g}",
                                     reuse=args.reuse_real)
                  for path, cfg in cfgs.items() for rate in rates]
    except ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    checks = fidelity.order_checks(points)
    print(fidelity.report(points, checks))
    fidelity.write(out, points, checks)
    return 0


def _write_compare(out: Path, results: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(results, indent=2))
    plot_compare(out, results)
    print(compare_table(results))
    print(f"wrote {out}/compare.json, compare.png, compare_slo.png and one directory per run")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run configs on the simulator (docs/simulator.md)")
    sim = p.add_subparsers(dest="simulate", required=True)
    r = sim.add_parser("run", help="one config at one or more rates")
    r.add_argument("--config", required=True, help="Serve config file (as augserve serve)")
    c = sim.add_parser("compare", help="several configs on the same arrivals")
    c.add_argument("--configs", required=True, help="comma-separated Serve config files")
    for q in (r, c):
        add_workload_args(q)
        q.add_argument("--profile", required=True,
                       help="profile NAME for every GPU class, or class=NAME,class=NAME "
                       "(simulator/profiles/NAME.yaml, or a path to a .yaml)")
        q.add_argument("--rates", default=None, help="requests per simulated second, "
                       "comma-separated (default: the first config's bench.rates, else 1)")
        q.add_argument("--duration-s", type=float, default=None,
                       help="window: sample 4 × rate × window requests with replacement, "
                       "cut the run at the window (default: the whole workload, to the end)")
        q.add_argument("--oracle", action="store_true",
                       help="predictions are the true lengths and API durations")
        q.add_argument("--noise", type=float, default=0.0,
                       help="oracle with Gaussian noise of this relative sd on the lengths")
        q.add_argument("--micro-steps", action="store_true",
                       help="step every request one by one instead of advancing decode "
                       "runs in O(1) per step (the same outputs, slower; a check)")
        q.add_argument("--out", required=True)
    f = sim.add_parser("fidelity", help="the simulator against the real engine, with CIs")
    add_workload_args(f)
    f.add_argument("--configs", default=None, help="comma-separated Serve configs "
                   "(default: fcfs, infercept and lamps; --quick: fcfs and lamps); a config "
                   "of several replicas (deploy/serve/hetero-fifo.yaml, hetero-qlm.yaml) "
                   "runs its real side as the Serve app")
    f.add_argument("--rates", default=None, help="comma-separated rates (default: the first "
                   "config's bench.rates; --quick: its first)")
    f.add_argument("--reps", type=int, default=None,
                   help="real repetitions per point (default 3; --quick: 1)")
    f.add_argument("--quick", action="store_true",
                   help="fcfs and lamps at one rate, one repetition: a smoke run")
    f.add_argument("--reuse-real", action="store_true",
                   help="read the real repetitions an earlier run left under --out (same "
                   "arguments) instead of running them again: re-judge a changed simulator")
    f.add_argument("--out", required=True)
    from simulator.exact import add_parser as add_exact  # vLLM is imported only when it runs
    add_exact(sim)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    if args.simulate == "exact":
        from simulator.exact import main
        return main(args)
    if args.simulate == "fidelity":
        return main_fidelity(args)
    return main_run(args) if args.simulate == "run" else main_compare(args)
