"""Accuracy of the length models on real prompts: the text segments of the MARS trace
(prompt = the whole context at the turn, truth = the completion's length in the served
model's tokens).  Split by request (seeded 70 % / 30 %), fit on the first part, score the
second; the constant-mean baseline alongside."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from predictor_service.config import PredictorConfig
from predictor_service.features import prompt_text
from predictor_service.length_models import LENGTH_MODELS, Batch, embedding_available
from predictor_service.types import bin_of


@dataclass
class Segment:
    request_id: str
    text: str
    prompt_tokens: int
    output_tokens: int


def trace_segments(path: str | Path, tokenize) -> list[Segment]:
    raw = json.loads(Path(path).read_text())
    out = []
    for rid, segments in raw.items():
        for s in segments:
            if "prompt" in s and "completion" in s:
                out.append(Segment(rid, s["prompt"], len(tokenize(s["prompt"])),
                                   len(tokenize(s["completion"]))))
    return out


def split(segments: list[Segment], seed: int, train_share: float = 0.7):
    ids = sorted({s.request_id for s in segments})
    random.Random(seed).shuffle(ids)
    train_ids = set(ids[:round(train_share * len(ids))])
    return ([s for s in segments if s.request_id in train_ids],
            [s for s in segments if s.request_id not in train_ids])


def scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    pb = np.array([bin_of(p) for p in pred])
    tb = np.array([bin_of(t) for t in truth])
    from scipy.stats import kendalltau  # ~1 s to import: only where it is used
    tau = kendalltau(pred, truth).statistic if np.ptp(pred) > 0 else 0.0
    return {"mae_tokens": float(np.mean(np.abs(pred - truth))), "kendall_tau": float(tau),
            "exact_bin": float(np.mean(pb == tb)), "within_1_bin": float(np.mean(np.abs(pb - tb) <= 1))}


def batch_of(segments: list[Segment], config: PredictorConfig, embedder) -> Batch:
    texts = [prompt_text(s.text, (), config.max_prompt_chars) for s in segments]
    return Batch(texts, np.array([s.prompt_tokens for s in segments], dtype=np.float64),
                 embedder.embed(texts) if embedder is not None else None,
                 np.array([s.output_tokens for s in segments], dtype=np.float64))


def evaluate(segments: list[Segment], seed: int, config: PredictorConfig | None = None,
             models: list[str] | None = None) -> dict:
    config = config or PredictorConfig()
    train, test = split(segments, seed)
    truth = np.array([s.output_tokens for s in test], dtype=np.float64)
    results = {"baseline-mean": scores(np.full(len(test), np.mean([s.output_tokens for s in train])), truth)}
    embedder = None
    if embedding_available():
        from predictor_service.embedding import Embedder
        embedder = Embedder(config.embed_max_tokens, cache_size=0)
    for name in models or list(LENGTH_MODELS):
        cls = LENGTH_MODELS[name]
        if cls.uses_embeddings and embedder is None:
            continue
        e = embedder if cls.uses_embeddings else None
        started = time.perf_counter()
        model = cls(config).fit(batch_of(train, config, e))
        dists = model.predict(batch_of(test, config, e))
        results[name] = {**scores(np.array([d.point for d in dists]), truth),
                         "fit_and_predict_s": round(time.perf_counter() - started, 2)}
    return {"seed": seed, "train_segments": len(train), "test_segments": len(test),
            "train_requests": len({s.request_id for s in train}),
            "test_requests": len({s.request_id for s in test}), "results": results}


def format_table(report: dict) -> str:
    lines = ["| model | MAE (tokens) | MAE / baseline | Kendall τ | exact bin | ±1 bin |",
             "|---|---|---|---|---|---|"]
    base = report["results"]["baseline-mean"]["mae_tokens"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['mae_tokens']:.1f} | {r['mae_tokens'] / base:.2f} | "
                     f"{r['kendall_tau']:.3f} | {100 * r['exact_bin']:.1f} % | "
                     f"{100 * r['within_1_bin']:.1f} % |")
    return "\n".join(lines)
