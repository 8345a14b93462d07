"""Exact mode (issue 14 item 4): the engine model (:mod:`simulator.engine` on
:mod:`simulator.kv`) against the replica's real scheduler, decision for decision.

The real side is :class:`replicas.vllm_scheduler.AugserveScheduler` — vLLM 0.32's V1
``Scheduler`` with the replica's waiting order — built the way vLLM's own tests build one
(``tests/v1/core/utils.py``: ``create_scheduler``, ``create_requests``): a ``VllmConfig``
with a tiny fake model config (a ``config.json`` only: no weights, no tokenizer), a
``KVCacheConfig`` of one full-attention group, priority scheduling, no engine process and
no model.  Each step calls ``schedule()``, fabricates the ``ModelRunnerOutput`` (one
sampled token for every request whose prefill or decode completes this step, the token a
function of (request id, output index)) and calls ``update_from_output``.  The model side
drives :class:`~simulator.engine.EngineModel` as :mod:`simulator.replica` does, with the
same ranker settings (policy, starvation threshold, re-rank period; no live profile) and
the same tokens.

A :class:`Script` (:func:`make_script`) has a small KV pool (preemption is frequent),
prompts that share prefixes (prefix-cache hits, on generated blocks too), user
priorities, outlooks for the ranking policies, streaming sessions (vLLM ``resumable``
requests: a turn ends, the session waits holding its KV, the next chunk re-sends the
last sampled token) and aborts.  Both sides record one :class:`StepTrace` per step;
:func:`compare` reports the first step and field where they differ.

This is the only module of :mod:`simulator` that imports vLLM, inside the functions that
need it: importing it stays cheap and vLLM-free.  ``augserve simulate exact --scripts N
[--first-seed S]`` (:func:`add_parser`) prints the agreement over N scripts and exits 0
when all agree.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import tempfile
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from typing import Any

from replicas.policy import ReplicaProfile, make_policy, outlook_from_extra
from replicas.policy.ranking import WaitingRanker
from replicas.scheduler_ops import Configure
from simulator.engine import EngineLimits, EngineModel, EngineRequest
from simulator.kv import KvCache

#: The ranker's start profile on both sides (``live_profile`` is off: the real side would
#: fit measured wall-clock step times, which differ from run to run).
PROFILE = ReplicaProfile(0.05, 10.0, 256, 0)
#: Policies a script may draw (``lamps``/``sjf`` rank by the request's outlook).
POLICIES = ("fcfs", "sjf", "lamps")
#: Steps after which a run is cut (both sides); no script should come near it.
MAX_STEPS = 20_000
#: The key under which the outlook travels in ``SamplingParams.extra_args``.
EXTRA_KEY = "augserve"


# ---- scripts ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ScriptTurn:
    """The next chunk of a streaming session: ``delay_steps`` after its previous turn
    ended, the turn's last sampled token (re-sent, as the replica does) and ``tokens``."""

    delay_steps: int
    tokens: tuple[int, ...]
    max_tokens: int
    outlook: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ScriptRequest:
    request_id: str
    arrival_step: int
    prompt: tuple[int, ...]
    max_tokens: int
    priority: int = 0
    #: ``extra_args["augserve"]`` of the request (None: no outlook, arrival order).
    outlook: dict[str, Any] | None = None
    #: A streaming-input session (vLLM ``resumable``; the model's ``session``): it pauses
    #: holding its KV at the end of each turn until its next chunk or its close.
    session: bool = False
    #: A session's chunks after the first turn.
    turns: tuple[ScriptTurn, ...] = ()
    #: A session closes (is aborted) this many steps after its last turn ended.
    close_delay_steps: int = 1
    #: Aborted before this step's schedule when still unfinished (None: never).
    abort_step: int | None = None

    @property
    def arrival_time(self) -> float:
        """The same on both sides: priority preemption compares (priority, arrival)."""
        return float(self.arrival_step)


@dataclass(frozen=True, slots=True)
class Script:
    seed: int
    block_size: int
    #: KV blocks including vLLM's null block (``num_gpu_blocks``).
    num_blocks: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enable_prefix_caching: bool
    policy: str
    requests: tuple[ScriptRequest, ...]
    starvation_threshold_steps: int | None = None
    rerank_every_steps: int = 1
    watermark: float = 0.0
    max_model_len: int = 2048
    #: vLLM's ``scheduler_reserve_full_isl`` (its default: on), the model's
    #: ``full_sequence_must_fit``: admission needs room for the whole sequence.
    reserve_full_isl: bool = True

    def describe(self) -> str:
        sessions = sum(r.session for r in self.requests)
        aborts = sum(r.abort_step is not None for r in self.requests)
        return (f"seed={self.seed} blocks={self.num_blocks}x{self.block_size} "
                f"seqs={self.max_num_seqs} budget={self.max_num_batched_tokens} "
                f"prefix_caching={self.enable_prefix_caching} policy={self.policy} "
                f"starvation={self.starvation_threshold_steps} "
                f"rerank={self.rerank_every_steps} watermark={self.watermark} "
                f"requests={len(self.requests)} sessions={sessions} aborts={aborts}")


def token_of(request_id: str, index: int) -> int:
    """The token a request samples as its ``index``-th output of a turn (both sides)."""
    return 1000 + zlib.crc32(f"{request_id}:{index}".encode()) % 30_000


def _outlook(rng: random.Random, context_tokens: int, max_tokens: int) -> dict[str, Any] | None:
    if rng.random() < 0.15:
        return None
    return {"context_tokens": context_tokens,
            "output_tokens": round(max_tokens * rng.uniform(0.5, 1.5), 3),
            "api_s": rng.choice([None, round(rng.uniform(0.05, 5.0), 3)]),
            "api_tokens": rng.randint(0, 100), "after_tokens": round(rng.uniform(0, 60), 3)}


def make_script(seed: int) -> Script:
    """A random script, the same for the same seed.  A small KV pool (preemption is
    frequent); some prompts share a prefix with an earlier one or continue an earlier
    request's prompt and outputs (prefix-cache hits, on generated blocks too); some
    scripts have streaming sessions and aborts.  Every request fits the pool alone (a
    session: all its turns), so a script ends, unless KV holders wait on each other's
    blocks: the driver then closes the oldest open session (:attr:`StepTrace.stall_close`)."""
    rng = random.Random(seed)
    block_size = 16
    num_blocks = rng.randint(8, 40)
    capacity = (num_blocks - 1) * block_size
    n = rng.randint(4, 20)
    horizon = rng.choice([0, 5, 20, 60])
    arrivals = sorted(rng.randint(0, horizon) for _ in range(n))
    with_priority = rng.random() < 0.4
    session_share = rng.choice([0.0, 0.0, 0.3, 0.6])
    abort_share = rng.choice([0.0, 0.0, 0.1, 0.25])
    bases = [[rng.randrange(1, 1000) for _ in range(rng.randint(16, 200))]
             for _ in range(rng.randint(1, 3))]
    requests: list[ScriptRequest] = []
    for i, arrival in enumerate(arrivals):
        rid = f"r{i}"
        max_tokens = rng.randint(1, 40)
        session = rng.random() < session_share
        turns: list[ScriptTurn] = []
        if session:
            room = capacity // 2
            for _ in range(rng.randint(0, 3)):
                t = ScriptTurn(rng.randint(1, 15),
                               tuple(rng.randrange(1, 1000) for _ in range(rng.randint(0, 30))),
                               rng.randint(1, 24))
                if len(t.tokens) + 1 + t.max_tokens > room - max_tokens - 1:
                    break
                room -= len(t.tokens) + 1 + t.max_tokens
                turns.append(t)
        else:
            room = capacity
        limit = max(1, min(200, room - max_tokens - sum(len(t.tokens) + 1 + t.max_tokens
                                                        for t in turns)))
        kind = rng.random()
        if kind < 0.3 or not requests and kind >= 0.65:
            prompt = [rng.randrange(1, 1000) for _ in range(rng.randint(1, limit))]
        elif kind < 0.65:
            base = rng.choice(bases)
            prompt = base[:rng.randint(1, len(base))]
            prompt += [rng.randrange(1, 1000) for _ in range(rng.randint(0, 40))]
        else:  # a follow-up turn: an earlier prompt, (part of) its outputs, new tokens
            prev = rng.choice(requests)
            outputs = [token_of(prev.request_id, k) for k in range(prev.max_tokens)]
            prompt = list(prev.prompt) + outputs[:rng.randint(0, len(outputs))]
            prompt += [rng.randrange(1, 1000) for _ in range(rng.randint(0, 24))]
        prompt = prompt[:limit]
        context = len(prompt) + max_tokens
        with_outlooks = []
        for t in turns:
            context += len(t.tokens) + 1
            with_outlooks.append(ScriptTurn(t.delay_steps, t.tokens, t.max_tokens,
                                            _outlook(rng, context, t.max_tokens)))
            context += t.max_tokens
        abort = (rng.randint(arrival, arrival + 40) if rng.random() < abort_share else None)
        requests.append(ScriptRequest(
            rid, arrival, tuple(prompt), max_tokens,
            rng.randint(0, 2) if with_priority else 0, _outlook(rng, len(prompt), max_tokens),
            session, tuple(with_outlooks), rng.randint(1, 10), abort))
    script = Script(
        seed=seed, block_size=block_size, num_blocks=num_blocks,
        max_num_seqs=rng.randint(2, 8), max_num_batched_tokens=rng.randint(32, 256),
        enable_prefix_caching=rng.random() < 0.8, policy=rng.choice(POLICIES),
        requests=tuple(requests),
        starvation_threshold_steps=rng.choice([None, 100, rng.randint(1, 6)]),
        rerank_every_steps=rng.choice([1, 1, 2, 3]),
        watermark=rng.choice([0.0, 0.0, 0.0, 0.05, 0.1]),
        reserve_full_isl=rng.random() >= 0.2)
    if rng.random() < 0.15:  # a max_model_len that requests reach (vLLM stops them there)
        script = _within_max_model_len(script, rng.randint(48, 200))
    return script


def _within_max_model_len(script: Script, max_model_len: int) -> Script:
    """``script`` under ``max_model_len``: prompts shorter (vLLM rejects longer ones), a
    session's turns cut where its context would pass it (vLLM checks each chunk, not the
    session; the replica's workloads drop requests whose context passes it).  A plain
    request may still reach it: vLLM ends it there."""
    requests = []
    for r in script.requests:
        prompt = r.prompt[:max_model_len - 1]
        context, turns = len(prompt) + r.max_tokens, []
        for t in r.turns:
            context += 1 + len(t.tokens) + t.max_tokens
            if context > max_model_len:
                break
            turns.append(t)
        requests.append(replace(r, prompt=prompt, turns=tuple(turns)))
    return replace(script, max_model_len=max_model_len, requests=tuple(requests))


# ---- traces -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StepTrace:
    """What one step decided, in comparable form (request ids, not objects)."""

    #: (request id, tokens) in scheduling order: running first, then admissions.
    scheduled: tuple[tuple[str, int], ...]
    #: Requests preempted this step (sorted: vLLM reports a set).
    preempted: tuple[str, ...]
    #: (request id, computed tokens at admission: its prefix-cache hit, or the KV a
    #: resumed session holds) in admission order.
    admitted: tuple[tuple[str, int], ...]
    #: Free KV blocks after the step (the null block is never free).
    num_free_blocks: int
    #: Requests whose turn ended this step (finished, or a session paused).
    finished: tuple[str, ...]
    #: ``running`` after the step, in order.
    running: tuple[str, ...]
    #: The waiting queues after the step, in order: the KV holders, then ``waiting``.
    waiting: tuple[str, ...]
    #: The session the driver closes after this step because nothing could be scheduled
    #: (KV holders waiting on each other's blocks: vLLM never preempts them), as a
    #: client's timeout would; None on an ordinary step.
    stall_close: str | None = None


#: Fields in the order :func:`compare` checks them.
TRACE_FIELDS = tuple(f.name for f in fields(StepTrace))
#: Steps that schedule nothing, with nothing left to arrive, after which the driver
#: closes the oldest open session (or ends the run when there is none).
STALL_STEPS = 3


class _Side:
    """One side of the comparison, driven by :func:`_drive`."""

    def add(self, r: ScriptRequest) -> None: ...

    def resume(self, r: ScriptRequest, turn: ScriptTurn, step: int) -> None: ...

    def close(self, r: ScriptRequest) -> None: ...

    def step(self) -> StepTrace:
        raise NotImplementedError

    def idle(self) -> bool:
        raise NotImplementedError


def _drive(script: Script, side: _Side, probe: Callable[[int, Any], None] | None,
           target: Any) -> list[StepTrace]:
    """Feed ``script`` to ``side`` step by step: arrivals and aborts at their steps, a
    session's next chunk ``delay_steps`` after its turn ended, its close after its last.
    A stall (:data:`STALL_STEPS` empty steps with nothing left to happen) closes the
    first open session of the script."""
    by_id = {r.request_id: r for r in script.requests}
    events: dict[int, list[tuple[str, ScriptRequest, int]]] = defaultdict(list)
    for r in script.requests:
        events[r.arrival_step].append(("add", r, 0))
        if r.abort_step is not None:
            events[r.abort_step].append(("close", r, 0))
    done: set[str] = set()
    turn_index: dict[str, int] = {}
    traces: list[StepTrace] = []
    empty = 0
    for step in range(MAX_STEPS):
        for kind, r, k in events.pop(step, ()):
            if r.request_id in done:
                continue
            if kind == "add":
                side.add(r)
                turn_index[r.request_id] = 0
            elif kind == "resume":
                side.resume(r, r.turns[k], step)
            else:
                side.close(r)
                done.add(r.request_id)
        if not events and side.idle():
            break
        trace = side.step()
        traces.append(trace)
        if probe is not None:
            probe(step, target)
        empty = 0 if trace.scheduled else empty + 1
        if not events and empty >= STALL_STEPS:
            stuck = next((r for r in script.requests if r.session and r.request_id in
                          turn_index and r.request_id not in done), None)
            if stuck is None:
                break
            events[step + 1].append(("close", stuck, 0))
            traces[-1] = replace(trace, stall_close=stuck.request_id)
            empty = 0
        for rid in trace.finished:
            r = by_id[rid]
            if not r.session:
                done.add(rid)
                continue
            k = turn_index[rid]
            if k < len(r.turns):
                events[step + r.turns[k].delay_steps].append(("resume", r, k))
                turn_index[rid] = k + 1
            else:
                events[step + r.close_delay_steps].append(("close", r, 0))
    return traces


# ---- the real side ----------------------------------------------------------------------
@lru_cache(maxsize=1)
def _fake_model_dir() -> str:
    """A directory with a tiny Llama ``config.json`` (no weights, no tokenizer)."""
    path = os.path.join(tempfile.gettempdir(), f"augserve-exact-model-{os.getuid()}")
    os.makedirs(path, exist_ok=True)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
              "num_hidden_layers": 2, "num_key_value_heads": 1, "head_dim": 32,
              "max_position_embeddings": 8192, "vocab_size": 32_768, "rms_norm_eps": 1e-6,
              "tie_word_embeddings": False, "dtype": "float32"}
    target = os.path.join(path, "config.json")
    tmp = f"{target}.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(config, f)
    os.replace(tmp, target)
    return path


@lru_cache(maxsize=4)
def _model_config(max_model_len: int) -> Any:
    from vllm.config import ModelConfig
    return ModelConfig(model=_fake_model_dir(), skip_tokenizer_init=True,
                       max_model_len=max_model_len, dtype="float32", seed=0)


@lru_cache(maxsize=4)
def _block_hasher(block_size: int) -> Callable[[Any], Any]:
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    init_none_hash(sha256)
    return get_request_block_hasher(block_size, sha256)


def make_real_scheduler(script: Script) -> Any:
    """The replica's ``AugserveScheduler`` for ``script`` (priority scheduling, the
    script's KV pool, budget, slots, watermark and prefix caching), its ranker configured
    through the replica's own utility call."""
    quiet = logging.getLogger("vllm")  # no per-config platform advice, 2000 times over
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return _make_real_scheduler(script)
    finally:
        quiet.setLevel(level)


def _make_real_scheduler(script: Script) -> Any:
    import torch
    from vllm.config import CacheConfig, SchedulerConfig, VllmConfig
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    from replicas.vllm_scheduler import AugserveScheduler

    scheduler_config = SchedulerConfig(
        max_num_seqs=script.max_num_seqs,
        max_num_batched_tokens=script.max_num_batched_tokens,
        max_model_len=script.max_model_len, enable_chunked_prefill=True,
        policy="priority", watermark=script.watermark, is_encoder_decoder=False,
        scheduler_reserve_full_isl=script.reserve_full_isl,
        scheduler_cls=AugserveScheduler)
    cache_config = CacheConfig(block_size=script.block_size,
                               enable_prefix_caching=script.enable_prefix_caching)
    vllm_config = VllmConfig(model_config=_model_config(script.max_model_len),
                             scheduler_config=scheduler_config, cache_config=cache_config)
    vllm_config.cache_config.num_gpu_blocks = script.num_blocks
    kv_cache_config = KVCacheConfig(
        num_blocks=script.num_blocks, kv_cache_tensors=[],
        kv_cache_groups=[KVCacheGroupSpec(["layer"], FullAttentionSpec(
            block_size=script.block_size, num_kv_heads=1, head_size=1,
            dtype=torch.float32))])
    scheduler = AugserveScheduler(
        vllm_config=vllm_config, kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=script.block_size, log_stats=False)
    scheduler(Configure(script.policy, PROFILE, **_ranker_settings(script)).to_wire())
    return scheduler


def _ranker_settings(script: Script) -> dict[str, Any]:
    return {"starvation_threshold_steps": script.starvation_threshold_steps,
            "rerank_every_steps": script.rerank_every_steps, "live_profile": False}


class _RealSide(_Side):
    def __init__(self, script: Script) -> None:
        from vllm import SamplingParams
        from vllm.v1.outputs import ModelRunnerOutput
        from vllm.v1.request import Request, RequestStatus
        self._params, self._output, self._request = SamplingParams, ModelRunnerOutput, Request
        self._aborted = RequestStatus.FINISHED_ABORTED
        self.script = script
        self.scheduler = make_real_scheduler(script)
        self._hasher = _block_hasher(script.block_size)

    def _new(self, r: ScriptRequest, tokens: Sequence[int], max_tokens: int,
             outlook: dict[str, Any] | None, arrival_time: float) -> Any:
        params = self._params(max_tokens=max_tokens, ignore_eos=True, temperature=0.0,
                              extra_args=None if outlook is None else {EXTRA_KEY: outlook})
        return self._request(request_id=r.request_id, prompt_token_ids=list(tokens),
                             sampling_params=params, pooling_params=None,
                             arrival_time=arrival_time, priority=r.priority,
                             block_hasher=self._hasher, resumable=r.session)

    def add(self, r: ScriptRequest) -> None:
        self.scheduler.add_request(self._new(r, r.prompt, r.max_tokens, r.outlook,
                                             r.arrival_time))

    def resume(self, r: ScriptRequest, turn: ScriptTurn, step: int) -> None:
        # the chunk re-sends the turn's last sampled token, which vLLM drops (the replica)
        last = self.scheduler.requests[r.request_id].output_token_ids[-1]
        self.scheduler.add_request(self._new(r, [last, *turn.tokens], turn.max_tokens,
                                             turn.outlook, float(step)))

    def close(self, r: ScriptRequest) -> None:
        self.scheduler.finish_requests(r.request_id, self._aborted)

    def idle(self) -> bool:
        return not self.scheduler.has_unfinished_requests()

    def step(self) -> StepTrace:
        scheduler = self.scheduler
        running_before = {id(r) for r in scheduler.running}
        out = scheduler.schedule()
        scheduled = tuple(out.num_scheduled_tokens.items())
        admitted = []
        sampled = []
        for rid, n in scheduled:
            request = scheduler.requests[rid]
            if id(request) not in running_before:
                admitted.append((rid, request.num_computed_tokens - n))
            done = request.num_computed_tokens >= request.num_tokens
            sampled.append([token_of(rid, request.num_output_tokens)] if done else [])
        req_ids = [rid for rid, _ in scheduled]
        outputs = scheduler.update_from_output(out, self._output(
            req_ids=req_ids, req_id_to_index={rid: i for i, rid in enumerate(req_ids)},
            sampled_token_ids=sampled))
        ended = tuple(o.request_id for eco in outputs.values() for o in eco.outputs
                      if o.finish_reason is not None)
        waiting = [r.request_id for r in scheduler.kv_holding_waiting]
        waiting += [r.request_id for r in scheduler.waiting]
        return StepTrace(
            scheduled=scheduled, preempted=tuple(sorted(out.preempted_req_ids or ())),
            admitted=tuple(admitted),
            num_free_blocks=scheduler.kv_cache_manager.block_pool.get_num_free_blocks(),
            finished=ended, running=tuple(r.request_id for r in scheduler.running),
            waiting=tuple(waiting))


def run_real(script: Script, probe: Callable[[int, Any], None] | None = None,
             ) -> list[StepTrace]:
    """The real side's trace; ``probe(step, scheduler)`` after each step (debugging)."""
    side = _RealSide(script)
    return _drive(script, side, probe, side.scheduler)


# ---- the model side ---------------------------------------------------------------------
def make_model(script: Script, *, kv_cache: type[KvCache] = KvCache,
               engine: type[EngineModel] = EngineModel) -> EngineModel:
    """The engine model for ``script``, with the real side's ranker settings."""
    ranker: WaitingRanker[EngineRequest] = WaitingRanker(
        lambda r: r.outlook, make_policy(script.policy), PROFILE, **_ranker_settings(script))
    kv = kv_cache(script.num_blocks, script.block_size,
                  enable_prefix_caching=script.enable_prefix_caching,
                  watermark=script.watermark)
    return engine(EngineLimits(script.max_num_seqs, script.max_num_batched_tokens,
                               script.max_model_len,
                               full_sequence_must_fit=script.reserve_full_isl),
                  kv, ranker, lambda r: token_of(r.request_id, r.num_turn_tokens))


class _ModelSide(_Side):
    """The simulator's engine model, driven as :mod:`simulator.replica` drives it."""

    def __init__(self, engine: EngineModel) -> None:
        self.engine = engine
        self._seqs: dict[str, EngineRequest] = {}

    def add(self, r: ScriptRequest) -> None:
        seq = EngineRequest(r.request_id, list(r.prompt), priority=r.priority,
                            arrival_time=r.arrival_time, max_tokens=r.max_tokens,
                            session=r.session, outlook=outlook_from_extra(r.outlook))
        self._seqs[r.request_id] = seq
        self.engine.add(seq)

    def resume(self, r: ScriptRequest, turn: ScriptTurn, step: int) -> None:
        seq = self._seqs[r.request_id]
        seq.outlook = outlook_from_extra(turn.outlook)
        self.engine.resume(seq, list(turn.tokens), turn.max_tokens, arrival_time=float(step))

    def close(self, r: ScriptRequest) -> None:
        self.engine.close(self._seqs[r.request_id])

    def idle(self) -> bool:
        return not self.engine.has_work()

    def step(self) -> StepTrace:
        engine = self.engine
        out = engine.step()
        tokens = {r.request_id: n for r, n in out.scheduled}
        return StepTrace(
            scheduled=tuple((r.request_id, n) for r, n in out.scheduled),
            preempted=tuple(sorted(r.request_id for r in out.preempted)),
            admitted=tuple((r.request_id, r.num_computed_tokens - tokens[r.request_id])
                           for r in out.admitted),
            num_free_blocks=engine.kv.num_free_blocks,
            finished=tuple(r.request_id for r in out.turn_ended),
            running=tuple(r.request_id for r in engine.running),
            waiting=tuple(r.request_id for r in [*engine.kv_holding, *engine.waiting]))


def run_model(script: Script, *, kv_cache: type[KvCache] = KvCache,
              engine: type[EngineModel] = EngineModel,
              probe: Callable[[int, EngineModel], None] | None = None) -> list[StepTrace]:
    """The model side's trace (``kv_cache``/``engine``: the classes to drive, for tests
    of the check itself); ``probe(step, engine)`` after each step (debugging)."""
    side = _ModelSide(make_model(script, kv_cache=kv_cache, engine=engine))
    return _drive(script, side, probe, side.engine)


# ---- comparison -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Agreement:
    seed: int
    num_steps: int
    #: What the script exercised (from the common trace).
    num_preemptions: int = 0
    #: Admissions that started from a prefix-cache hit or from KV held (a resumed session).
    num_hit_admissions: int = 0
    #: Sessions closed to break a stall (:attr:`StepTrace.stall_close`).
    num_stall_closes: int = 0

    @property
    def agrees(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Disagreement:
    seed: int
    #: First step (0-based) where the traces differ.
    step: int
    #: The first :class:`StepTrace` field that differs there, or ``"num_steps"`` when one
    #: run ended earlier.
    field: str
    real: Any
    model: Any

    @property
    def agrees(self) -> bool:
        return False

    def __str__(self) -> str:
        return (f"seed {self.seed}: step {self.step}, {self.field}: "
                f"vllm {self.real!r} != model {self.model!r}")


def compare_traces(seed: int, real: Sequence[StepTrace],
                   model: Sequence[StepTrace]) -> Agreement | Disagreement:
    """The first step and field where the traces differ, else what they share."""
    for step, (a, b) in enumerate(zip(real, model)):
        if a != b:
            name = next(n for n in TRACE_FIELDS if getattr(a, n) != getattr(b, n))
            return Disagreement(seed, step, name, getattr(a, name), getattr(b, name))
    if len(real) != len(model):
        return Disagreement(seed, min(len(real), len(model)), "num_steps", len(real),
                            len(model))
    return Agreement(seed, len(real), sum(len(t.preempted) for t in real),
                     sum(1 for t in real for _, hit in t.admitted if hit > 0),
                     sum(t.stall_close is not None for t in real))


def compare_script(script: Script, *, kv_cache: type[KvCache] = KvCache,
                   engine: type[EngineModel] = EngineModel) -> Agreement | Disagreement:
    """The engine model (``kv_cache``/``engine``) against vLLM's scheduler on ``script``."""
    return compare_traces(script.seed, run_real(script),
                          run_model(script, kv_cache=kv_cache, engine=engine))


def compare(seed: int) -> Agreement | Disagreement:
    """The engine model against vLLM's scheduler on :func:`make_script` ``(seed)``."""
    return compare_script(make_script(seed))


@dataclass(slots=True)
class AgreementReport:
    first_seed: int
    num_scripts: int
    agreements: list[Agreement] = field(default_factory=list)
    #: field → the disagreements on it (the first differing field of each script).
    by_field: dict[str, list[Disagreement]] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def num_agree(self) -> int:
        return len(self.agreements)

    @property
    def all_agree(self) -> bool:
        return self.num_agree == self.num_scripts

    def __str__(self) -> str:
        last = self.first_seed + self.num_scripts - 1
        a = self.agreements
        lines = [f"exact mode: {self.num_agree}/{self.num_scripts} scripts agree with vLLM's "
                 f"scheduler (seeds {self.first_seed}..{last}, {self.wall_s:.1f} s)",
                 f"  agreeing scripts: {sum(x.num_steps for x in a)} steps, "
                 f"{sum(x.num_preemptions for x in a)} preemptions, "
                 f"{sum(x.num_hit_admissions for x in a)} admissions from a prefix hit or "
                 f"held KV, {sum(x.num_stall_closes for x in a)} sessions closed on a stall"]
        for name, ds in sorted(self.by_field.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            seeds = ", ".join(str(d.seed) for d in ds[:10]) + (" ..." if len(ds) > 10 else "")
            lines.append(f"  disagree on {name}: {len(ds)} scripts (seeds {seeds})")
            lines.append(f"    e.g. {ds[0]}")
        return "\n".join(lines)


def agreement(n_scripts: int, first_seed: int = 0) -> AgreementReport:
    """:func:`compare` over seeds ``first_seed .. first_seed + n_scripts - 1``."""
    started = time.perf_counter()
    report = AgreementReport(first_seed, n_scripts)
    for seed in range(first_seed, first_seed + n_scripts):
        result = compare(seed)
        if isinstance(result, Agreement):
            report.agreements.append(result)
        else:
            report.by_field.setdefault(result.field, []).append(result)
    report.wall_s = time.perf_counter() - started
    return report


# ---- command line -----------------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``exact`` under the ``augserve simulate`` sub-parsers ``sub``."""
    p = sub.add_parser("exact", help="the engine model against vLLM's scheduler, decision "
                       "for decision, on random scripts (exit 1 on any disagreement)")
    p.add_argument("--scripts", type=int, default=2000, help="how many random scripts")
    p.add_argument("--first-seed", type=int, default=0, help="seed of the first script")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    if args.scripts < 1:
        raise SystemExit("--scripts must be at least 1")
    report = agreement(args.scripts, args.first_seed)
    print(report)
    return 0 if report.all_agree else 1
