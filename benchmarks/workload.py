"""Workloads: requests with arrival times, prompts and augmentation turns.

Sources: the LAMPS/INFERCEPT trace (:mod:`benchmarks.trace`), the generators in
:mod:`benchmarks.generators`, and user JSONL files (:func:`load_jsonl`, format below).

JSONL workload format, one request per line::

    {"id": "r1",                     # optional; default: line number
     "arrival_s": 0.5,               # optional; default: arrivals from --rate
     "prompt": "text" | "prompt_token_ids": [1, 2] | "prompt_tokens": 300,
     "turns": [{"generate_tokens": 40, "api_name": "search", "api_duration_s": 1.2,
                "api_tokens": 25},
               {"generate_tokens": 30}],
     "slo": "interactive"}           # optional SLO class

``prompt_tokens`` asks for a synthetic prompt of that many tokens.  Times are seconds.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Synthetic prompts use token ids from this range (present in any vocabulary ≥ 1024).
SYNTH_BASE_ID, SYNTH_SPAN = 400, 512


class WorkloadError(ValueError):
    """A malformed workload file; names the line and the key."""


@dataclass(frozen=True)
class Turn:
    generate_tokens: int
    api_name: str | None = None
    api_duration_s: float = 0.0
    api_tokens: int = 0

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"generate_tokens": self.generate_tokens}
        if self.api_name is not None:
            out.update(api_name=self.api_name, api_duration_s=self.api_duration_s,
                       api_tokens=self.api_tokens)
        return out


@dataclass(frozen=True)
class WorkloadRequest:
    request_id: str
    prompt_token_ids: tuple[int, ...] | None
    prompt_text: str | None
    turns: tuple[Turn, ...]
    arrival_s: float | None = None
    slo: str | None = None
    kind: str | None = None

    @property
    def generated_tokens(self) -> int:
        return sum(t.generate_tokens for t in self.turns)

    @property
    def api_time_s(self) -> float:
        return sum(t.api_duration_s for t in self.turns if t.api_name is not None)

    @property
    def num_api_calls(self) -> int:
        return sum(1 for t in self.turns if t.api_name is not None)

    def total_context_tokens(self, prompt_len: int) -> int:
        return prompt_len + sum(t.generate_tokens + t.api_tokens for t in self.turns)


@dataclass
class Workload:
    name: str
    requests: list[WorkloadRequest]
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "num_requests": len(self.requests),
                "num_api_calls": sum(r.num_api_calls for r in self.requests), **self.meta}

    def subset(self, limit: int | None, seed: int = 0) -> Workload:
        """``limit`` requests drawn by ``seed`` (order kept); all if None."""
        if limit is None or limit >= len(self.requests):
            return self
        picked = sorted(random.Random(seed).sample(range(len(self.requests)), limit))
        return Workload(self.name, [self.requests[i] for i in picked],
                        {**self.meta, "limit": limit, "subset_seed": seed})

    def sampled(self, n: int, seed: int = 0, salt: bool = True) -> Workload:
        """``n`` requests drawn with replacement (the papers' pool), order of drawing kept.
        Copies get unique ids (``id#k``); with ``salt`` every copy's prompt starts with a
        token of its own, so that copies share no prefix-cache block."""
        rng = random.Random(seed)
        counts: dict[str, int] = {}
        reqs = []
        for _ in range(n):
            r = self.requests[rng.randrange(len(self.requests))]
            k = counts[r.request_id] = counts.get(r.request_id, 0) + 1
            rid = f"{r.request_id}#{k}"
            prompt = r.prompt_token_ids
            if salt and prompt is not None:
                prompt = (SYNTH_BASE_ID + random.Random(rid).randrange(SYNTH_SPAN),) + prompt[1:]
            reqs.append(dataclasses.replace(r, request_id=rid, prompt_token_ids=prompt))
        return Workload(self.name, reqs, {**self.meta, "sampled_with_replacement": n,
                                          "sample_seed": seed, "salted": salt})

    def scaled(self, time_scale: float) -> Workload:
        """API durations and arrival gaps multiplied by ``time_scale``."""
        if time_scale == 1.0:
            return self
        reqs = [dataclasses.replace(
            r, arrival_s=None if r.arrival_s is None else r.arrival_s * time_scale,
            turns=tuple(dataclasses.replace(t, api_duration_s=t.api_duration_s * time_scale)
                        for t in r.turns)) for r in self.requests]
        return Workload(self.name, reqs, {**self.meta, "time_scale": time_scale})

    def with_arrivals(self, arrivals_s: list[float]) -> Workload:
        assert len(arrivals_s) == len(self.requests)
        reqs = [dataclasses.replace(r, arrival_s=a) for r, a in zip(self.requests, arrivals_s)]
        return Workload(self.name, reqs, self.meta)

    def with_slo_classes(self, shares: dict[str, float], seed: int = 0) -> Workload:
        """Assign SLO classes by share (requests that name one keep it)."""
        total = sum(shares.values())
        if not shares or total <= 0:
            return self
        names, weights = list(shares), [v / total for v in shares.values()]
        rng = random.Random(seed)
        reqs = [r if r.slo else dataclasses.replace(r, slo=rng.choices(names, weights)[0])
                for r in self.requests]
        return Workload(self.name, reqs, {**self.meta, "slo_shares": shares})


def synthetic_prompt(num_tokens: int, salt: str) -> tuple[int, ...]:
    rng = random.Random(salt)
    return tuple(SYNTH_BASE_ID + rng.randrange(SYNTH_SPAN) for _ in range(num_tokens))


def _need(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise WorkloadError(f"{where}: missing key {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WorkloadError(f"{where}: key {key!r} must be {getattr(kind, '__name__', kind)}")
    return value


def _turn(obj: Any, where: str) -> Turn:
    if not isinstance(obj, dict):
        raise WorkloadError(f"{where}: a turn must be an object")
    n = _need(obj, "generate_tokens", int, where)
    if n < 1:
        raise WorkloadError(f"{where}: key 'generate_tokens' must be ≥ 1")
    if obj.get("api_name") is None:
        return Turn(n)
    name = _need(obj, "api_name", str, where)
    d = float(_need(obj, "api_duration_s", (int, float), where))
    m = _need(obj, "api_tokens", int, where)
    if d < 0 or m < 0:
        raise WorkloadError(f"{where}: api_duration_s and api_tokens must be ≥ 0")
    return Turn(n, name, d, m)


def load_jsonl(path: str | Path) -> Workload:
    """Parse a JSONL workload; raise :class:`WorkloadError` naming the line and key."""
    requests = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise WorkloadError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise WorkloadError(f"{where}: a line must be a JSON object")
        rid = str(obj.get("id", lineno))
        turns_raw = _need(obj, "turns", list, where)
        if not turns_raw:
            raise WorkloadError(f"{where}: key 'turns' is empty")
        turns = tuple(_turn(t, f"{where} turns[{i}]") for i, t in enumerate(turns_raw))
        ids, text = None, None
        if "prompt_token_ids" in obj:
            ids = tuple(_need(obj, "prompt_token_ids", list, where))
            if not ids or not all(isinstance(t, int) and t >= 0 for t in ids):
                raise WorkloadError(f"{where}: key 'prompt_token_ids' must be non-negative ints")
        elif "prompt" in obj:
            text = _need(obj, "prompt", str, where)
        elif "prompt_tokens" in obj:
            n = _need(obj, "prompt_tokens", int, where)
            if n < 1:
                raise WorkloadError(f"{where}: key 'prompt_tokens' must be ≥ 1")
            ids = synthetic_prompt(n, rid)
        else:
            raise WorkloadError(f"{where}: missing key 'prompt' (or 'prompt_token_ids', "
                                "'prompt_tokens')")
        arrival = obj.get("arrival_s")
        if arrival is not None and (not isinstance(arrival, (int, float)) or arrival < 0):
            raise WorkloadError(f"{where}: key 'arrival_s' must be a number ≥ 0")
        slo = obj.get("slo")
        if slo is not None and not isinstance(slo, str):
            raise WorkloadError(f"{where}: key 'slo' must be a class name")
        requests.append(WorkloadRequest(rid, ids, text, turns, arrival, slo, obj.get("kind")))
    if not requests:
        raise WorkloadError(f"{path}: no requests")
    return Workload(Path(path).stem, requests, {"source": str(path)})


def dump_jsonl(workload: Workload, path: str | Path) -> None:
    with open(path, "w") as f:
        for r in workload.requests:
            obj: dict[str, Any] = {"id": r.request_id, "turns": [t.to_api() for t in r.turns]}
            if r.prompt_token_ids is not None:
                obj["prompt_token_ids"] = list(r.prompt_token_ids)
            else:
                obj["prompt"] = r.prompt_text
            if r.arrival_s is not None:
                obj["arrival_s"] = r.arrival_s
            if r.slo:
                obj["slo"] = r.slo
            f.write(json.dumps(obj) + "\n")
