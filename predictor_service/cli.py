"""``augserve predictor ...`` subcommands (registered by the ``augserve`` command)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import yaml


def load_config(args: argparse.Namespace):
    from predictor_service.config import PredictorConfig
    data = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
    for key, value in (("port", args.port), ("redis_url", args.redis), ("host", args.host),
                       ("length_model", args.length_model),
                       ("classifier_checkpoint", args.checkpoint)):
        if value is not None:
            data[key] = value
    return PredictorConfig.model_validate(data)


def _serve(args: argparse.Namespace) -> int:
    from predictor_service.server import serve_forever
    asyncio.run(serve_forever(load_config(args)))
    return 0


def add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the predictor gRPC server until Ctrl-C / SIGTERM")
    p.add_argument("--port", type=int, default=50051)
    p.add_argument("--host", default=None, help="interface (default 0.0.0.0)")
    p.add_argument("--redis", default=None, help="redis URL for persistence (default: memory)")
    p.add_argument("--length-model", default=None, help="embedding-knn, hashed-linear, classifier")
    p.add_argument("--checkpoint", default=None, help="classifier checkpoint (.npz)")
    p.add_argument("--config", default=None, help="YAML file of PredictorConfig keys")
    p.set_defaults(func=_serve)
