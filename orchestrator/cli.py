"""The ``augserve`` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading


def _serve(args: argparse.Namespace) -> int:
    from orchestrator import serving
    schema = serving.load_serve_config(args.config)
    # Explicit handlers: a shell's background job inherits SIGINT as *ignored*, and
    # Ctrl-C / SIGTERM must stop Serve and Ray cleanly however the command was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    serving.start_ray()
    stop = threading.Event()
    try:
        serving.deploy(schema)
        http = schema.http_options
        print(f"augserve is serving on http://{http.host}:{http.port} (Ctrl-C stops)", flush=True)
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        print("stopping Serve and Ray ...", flush=True)
        serving.shutdown()
    return 0


def _make_tiny_model(args: argparse.Namespace) -> int:
    from replicas.tiny_model import build_tiny_model
    path = build_tiny_model(args.dir, seed=args.seed, force=args.force)
    print(path)
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.bench == "overhead":
        from benchmarks.overhead import main as overhead_main
        return overhead_main(args)
    if args.bench.startswith("predictor-"):
        from benchmarks.predictor_bench import main as predictor_main
        return predictor_main(args)
    if args.bench == "lamps-overhead":
        from benchmarks.lamps_overhead import main as lamps_overhead_main
        return lamps_overhead_main(args)
    if args.bench == "queue-dispatch":
        from benchmarks.queue_dispatch import main as queue_dispatch_main
        return queue_dispatch_main(args)
    if args.bench == "step-profile":
        from benchmarks.step_profile import main as step_profile_main
        return step_profile_main(args)
    if args.bench == "client":
        from benchmarks.client_capacity import main as client_main
        return client_main(args)
    from benchmarks import runner
    if args.bench == "run":
        return runner.main_run(args)
    if args.bench == "compare":
        return runner.main_compare(args)
    raise SystemExit(f"unknown benchmark {args.bench}")


def _train_classifier(args: argparse.Namespace) -> int:
    from benchmarks.predictor_bench import train_classifier_on_trace
    return train_classifier_on_trace(args)


def build_parser() -> argparse.ArgumentParser:
    from orchestrator.serving import DEFAULT_CONFIG
    parser = argparse.ArgumentParser(prog="augserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="start Ray (if needed), deploy a Serve config, block")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="Serve config file")
    p.set_defaults(func=_serve)
    p = sub.add_parser("make-tiny-model", help="build the tiny random-weight model into DIR")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="rebuild even if present")
    p.set_defaults(func=_make_tiny_model)
    p = sub.add_parser("predictor", help="the predictor service")
    pred = p.add_subparsers(dest="predictor", required=True)
    from predictor_service.cli import add_serve_parser
    add_serve_parser(pred)
    t = pred.add_parser("train-classifier", help="train the classifier checkpoint on a trace")
    t.add_argument("--trace", required=True, help="MARS-format trace (its text segments)")
    t.add_argument("--out", required=True, help="checkpoint file (.npz)")
    t.add_argument("--tokenizer", default=None, help="tokenizer counting lengths (default: tiny model)")
    t.set_defaults(func=_train_classifier)
    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    o = bench.add_parser("overhead", help="latency/throughput added by ingress + queue manager")
    o.add_argument("--concurrency", default="1,32", help="comma-separated client counts")
    o.add_argument("--requests-per-client", type=int, default=8)
    o.add_argument("--max-tokens", type=int, default=32)
    o.add_argument("--prompt-tokens", type=int, default=32)
    o.add_argument("--port", type=int, default=8011)
    o.add_argument("--stream-interval-ms", type=float, default=None,
                   help="override the replica's delta coalescing interval")
    o.add_argument("--out", default=None, help="write results JSON here")
    from benchmarks.runner import add_workload_args
    r = bench.add_parser("run", help="replay a workload against a running endpoint")
    add_workload_args(r)
    r.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000")
    r.add_argument("--rate", type=float, required=True, help="arrival rate (req/s, before scaling)")
    r.add_argument("--config-label", default="external", help="name recorded in results.json")
    r.add_argument("--out", required=True)
    c = bench.add_parser("compare", help="deploy each Serve config, replay at each rate")
    add_workload_args(c)
    c.add_argument("--configs", required=True, help="comma-separated Serve config files")
    c.add_argument("--rates", default=None,
                   help="comma-separated (default: the first config's bench.rates, else 1,2,4)")
    c.add_argument("--out", required=True)
    from benchmarks.predictor_bench import add_bench_parsers
    add_bench_parsers(bench)
    from benchmarks.lamps_overhead import add_parser as add_lamps_overhead
    add_lamps_overhead(bench)
    from benchmarks.queue_dispatch import add_parser as add_queue_dispatch
    add_queue_dispatch(bench)
    from benchmarks.step_profile import add_parser as add_step_profile
    add_step_profile(bench)
    k = bench.add_parser("client", help="open-loop rate the load client sustains")
    k.add_argument("--rates", default="250,500,1000")
    k.add_argument("--seconds", type=float, default=5.0)
    p.set_defaults(func=_bench)
    from simulator.cli import add_parser as add_simulate
    add_simulate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
