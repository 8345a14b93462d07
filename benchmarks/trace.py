"""Loader of the LAMPS / INFERCEPT trace (``mars_multi_api.json``).

``{request_id: [segment, ...]}``; every segment is a turn, and a segment with
``api_time`` ends in an API call (184 requests end with one that no turn follows).
Token-count segments give ``prompt_tokens`` (whole context at the turn's start),
``completion_tokens`` and ``api_token_length``; text segments give ``prompt``,
``completion`` and ``api_token``, tokenized here with the served model's tokenizer.
The trace names no APIs: calls are named by the augmentation class their duration
suggests (INFERCEPT's means), which keeps per-API statistics meaningful.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from benchmarks.workload import Turn, Workload, WorkloadError, WorkloadRequest, synthetic_prompt

Tokenize = Callable[[str], list[int]]


def api_name_for(duration_s: float) -> str:
    """A stable API name from the call's duration (the trace has none)."""
    if duration_s < 0.01:
        return "math"
    if duration_s < 0.3:
        return "virtual_env"
    if duration_s < 5.0:
        return "qa"
    if duration_s < 18.0:
        return "tts"
    if duration_s < 25.0:
        return "image"
    return "chatbot"


def load_trace(path: str | Path, tokenize: Tokenize) -> Workload:
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, dict):
        raise WorkloadError(f"{path}: the trace must be a JSON object of request id → segments")
    requests = []
    for rid, segments in raw.items():
        if not isinstance(segments, list) or not segments:
            raise WorkloadError(f"{path}: request {rid!r} has no segments")
        where = f"{path}: request {rid!r}"
        if "prompt_tokens" in segments[0]:
            requests.append(_token_shape(rid, segments, where))
        elif "prompt" in segments[0]:
            requests.append(_text_shape(rid, segments, tokenize, where))
        else:
            raise WorkloadError(f"{where}: segment 0 has neither 'prompt_tokens' nor 'prompt'")
    return Workload(Path(path).stem, requests, {"source": str(path)})


def _api(segment: dict, api_tokens: int) -> tuple[str | None, float, int]:
    if "api_time" not in segment:
        return None, 0.0, 0
    d = float(segment["api_time"])
    return api_name_for(d), d, api_tokens


def _token_shape(rid: str, segments: list[dict], where: str) -> WorkloadRequest:
    turns = []
    for i, s in enumerate(segments):
        try:
            # a result has no negative length (the multi-API trace gives -2 in 4 segments,
            # which the API would refuse with 400): clamped to 0
            name, d, m = _api(s, max(0, int(s.get("api_token_length", 0))))
            turns.append(Turn(max(1, int(s["completion_tokens"])), name, d, m))
        except KeyError as exc:
            raise WorkloadError(f"{where} segment {i}: missing key {exc.args[0]!r}") from None
    prompt = synthetic_prompt(int(segments[0]["prompt_tokens"]), rid)
    return WorkloadRequest(rid, prompt, None, tuple(turns), kind="tokens")


def _text_shape(rid: str, segments: list[dict], tokenize: Tokenize, where: str) -> WorkloadRequest:
    turns = []
    for i, s in enumerate(segments):
        try:
            n = len(tokenize(s["completion"]))
            name, d, m = _api(s, len(tokenize(s.get("api_token", ""))))
        except KeyError as exc:
            raise WorkloadError(f"{where} segment {i}: missing key {exc.args[0]!r}") from None
        turns.append(Turn(max(1, n), name, d, m))
    prompt = tuple(tokenize(segments[0]["prompt"])) or synthetic_prompt(1, rid)
    return WorkloadRequest(rid, prompt, None, tuple(turns), kind="text")
