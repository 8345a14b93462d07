"""``augserve bench step-profile``: this machine's engine as a simulator profile.

Starts the real vLLM engine of a config's first replica (no Serve), drives it with a
varied load — closed-loop clients at 1, 2, 4, 8, 16 and 32 at a time (capped by
``max_num_seqs``), random prompts of 16 to 1,024 tokens, 8 to 128 output tokens,
``ignore_eos`` — and reads the scheduler's step records (tokens, sequences, prefill
tokens, context, ms) as it goes.  The step-cost line is fitted on 70 % of the steps and
scored on the other 30 % (:mod:`simulator.fit`), and written as a profile
(``simulator/profiles/NAME.yaml``) whose numbers say how they were measured.  Nothing
else may run on the machine meanwhile.

``--from-steps``: no engine; the line is fitted on steps already recorded (the
``steps.csv`` each real repetition of ``simulate fidelity`` leaves: the engine under the
workloads' own load) and scored on ``--held-out`` ones (e.g. another rate's), or on a
30 % split; the derived entries (saturation, KV bytes) are kept from the ``--out``
profile."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import random
import sys
import time
from pathlib import Path

import yaml

from replicas.policy.profile import StepRecord
from replicas.types import ReplicaRequest, RequestHeader, SamplingSpec

CONCURRENCY = (1, 2, 4, 8, 16, 32)


async def _client(engine, rng: random.Random, model: str, stop_at: float, n: list[int]) -> None:
    while time.monotonic() < stop_at:
        n[0] += 1
        prompt = [100 + rng.randrange(800) for _ in range(rng.randint(16, 1024))]
        req = ReplicaRequest(RequestHeader(f"step-profile-{n[0]}", model), prompt,
                             SamplingSpec(max_tokens=rng.randint(8, 128), ignore_eos=True))
        async for _ in engine.generate(req):
            pass


async def measure(engine, model: str, seconds: float, max_num_seqs: int,
                  seed: int) -> list[StepRecord]:
    rng, records, n = random.Random(seed), [], [0]
    await engine.take_steps()  # drop what came before
    levels = [c for c in CONCURRENCY if c <= max_num_seqs] or [1]
    for level in levels:
        stop_at = time.monotonic() + seconds / len(levels)
        clients = [asyncio.create_task(_client(engine, random.Random(rng.random()), model,
                                               stop_at, n)) for _ in range(level)]
        while not all(c.done() for c in clients):
            await asyncio.sleep(0.25)
            records += await engine.take_steps()
        await asyncio.gather(*clients)
        print(f"  {level} at a time: {len(records)} steps so far", file=sys.stderr)
    records += await engine.take_steps()
    return records


def profile_yaml(name: str, model: str, records: list[StepRecord], engine, command: str,
                 seed: int, held_out: list[StepRecord] | None = None,
                 derived: dict | None = None) -> dict:
    """``held_out``: score on these (all of ``records`` fit), else on a 30 % split;
    ``derived``: the saturation and KV entries (else read from ``engine``)."""
    from simulator.fit import fit_linear, score, split
    train, test = (records, held_out) if held_out else split(records, 0.3, seed)
    cost = fit_linear(train)
    held = score(cost, test)
    when = datetime.date.today().isoformat()
    how = (f"fitted by `{command}` on {when} on a 2-core CPU machine: {len(train)} steps fit, "
           f"{held.num_steps} held out; held-out mean absolute step-time error "
           f"{held.mean_abs_error:.1%}, total-time bias {held.total_bias:+.1%}")
    from simulator.fit import host_gaps_ms
    gaps = host_gaps_ms(records)
    host = {} if not gaps else {"host_ms_per_step": {
        "value": round(sum(gaps) / len(gaps), 4), "basis": "measured",
        "source": f"mean host time between two of the {len(records)} steps `{command}` read "
                  f"(the next step's start less this one's start and model run; pauses of "
                  f"50 ms or more, the engine idle, left out: {len(gaps)} gaps) on {when}"}}
    return {
        "name": name, "gpu": "CPU", "model": model, "tensor_parallel": 1,
        **_step_cost(cost, how),
        **(derived if derived is not None else _derived(engine)), **host}


def _step_cost(cost, how: str) -> dict:
    return {
        "step_cost": {
            "kind": "linear",
            "c_ms": {"value": round(cost.c_ms, 4), "basis": "measured", "source": how},
            "a_ms_per_token": {"value": round(cost.a_ms_per_token, 6), "basis": "measured",
                               "source": how},
            "b_ms_per_context_token": {"value": round(cost.b_ms_per_context_token, 8),
                                       "basis": "measured", "source": how}}}


def _derived(engine) -> dict:
    return {
        "saturation_tokens": {"value": int(engine.chunk_tokens), "basis": "derived",
                              "source": "the engine's prefill chunk (max_num_batched_tokens), "
                              "as replicas.profiling uses on a CPU, where every token costs"},
        "kv_bytes_per_token": {"value": int(engine.kv_bytes_per_token()), "basis": "derived",
                               "source": "2 (K and V) × layers × KV heads × head size × bytes "
                               "per element of the engine's model config "
                               "(VLLMEngine._compute_kv_bytes_per_token)"},
    }


def _glob(patterns: str) -> list[Path]:
    """Comma-separated glob patterns, relative to the working directory; each must match."""
    out: list[Path] = []
    for pattern in (p for p in patterns.split(",") if p):
        found = sorted(Path().glob(pattern))
        if not found:
            raise FileNotFoundError(f"no steps file matches {pattern!r}")
        out += found
    return out


def from_steps(args: argparse.Namespace) -> int:
    """Fit the profile from recorded steps (no engine)."""
    from simulator.fit import read_steps
    out = Path(args.out)
    try:
        records = [r for p in _glob(args.from_steps) for r in read_steps(p)]
        held = ([r for p in _glob(args.held_out) for r in read_steps(p)]
                if args.held_out else None)
        old = yaml.safe_load(out.read_text())
        derived = {k: old[k] for k in ("saturation_tokens", "kv_bytes_per_token")}
        model, head = old["model"], out.read_text().splitlines()[0]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = f"augserve bench step-profile --from-steps '{args.from_steps}'" + (
        f" --held-out '{args.held_out}'" if args.held_out else f" --seed {args.seed}")
    doc = profile_yaml(out.stem, model, records, None, command, args.seed, held, derived)
    out.write_text(head + "\n" + yaml.safe_dump(doc, sort_keys=False))
    print(f"{len(records)} steps; {doc['step_cost']['c_ms']['source']}")
    print(f"wrote {out}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.from_steps:
        return from_steps(args)
    from replicas.engine import VLLMEngine
    from simulator.setup import load_config
    cfg = load_config(args.config)
    replica = cfg.app.replicas[0]
    engine = VLLMEngine(replica)
    try:
        records = asyncio.run(measure(engine, replica.model_name, args.seconds,
                                      replica.engine.max_num_seqs, args.seed))
        if args.records_out:
            Path(args.records_out).write_text(
                "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records))
        out = Path(args.out)
        command = (f"augserve bench step-profile --config {args.config} --seconds "
                   f"{args.seconds:g} --seed {args.seed}")
        doc = profile_yaml(out.stem, replica.model_name, records, engine, command, args.seed)
    finally:
        engine.shutdown()
    out.write_text(f"# This machine's vLLM CPU engine ({replica.model_name}, config {args.config}),"
                   " measured: see each number's source.\n" + yaml.safe_dump(doc, sort_keys=False))
    print(f"{len(records)} steps; {doc['step_cost']['c_ms']['source']}")
    print(f"wrote {out}")
    return 0


def add_parser(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("step-profile", help="fit this machine's engine as a simulator profile")
    p.add_argument("--config", default="deploy/serve/bench-lamps.yaml",
                   help="Serve config; its first replica's engine is measured")
    p.add_argument("--seconds", type=float, default=120.0, help="length of the measured load")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="simulator/profiles/cpu-tiny-llama.yaml")
    p.add_argument("--records-out", default=None, help="also write the step records (JSONL)")
    p.add_argument("--from-steps", default=None,
                   help="fit on recorded steps instead (comma-separated globs of steps.csv, "
                   "e.g. simulate fidelity's real-*/steps.csv); no engine starts")
    p.add_argument("--held-out", default=None,
                   help="with --from-steps: score on these steps files (default: a 30 %% split)")
