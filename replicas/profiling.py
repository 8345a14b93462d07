"""Profiling a replica's engine at start-up (ALGORITHMS.md, "Profiles"): one prefill of
each configured length, a few times, each in an otherwise idle engine so that it is one
engine step of that many tokens; the scheduler times the steps; a line is fitted.  KV bytes
per token come from the engine's model config.  Swap is unsupported on the CPU build."""

from __future__ import annotations

import logging
import random
import statistics
import uuid

from replicas.config import ProfilingConfig
from replicas.engine import ReplicaEngine
from replicas.policy import ReplicaProfile, profile_from_points
from replicas.types import ReplicaRequest, RequestHeader, SamplingSpec

logger = logging.getLogger(__name__)


def default_profile(cfg: ProfilingConfig, kv_bytes_per_token: int,
                    chunk_tokens: int | None = None) -> ReplicaProfile:
    return ReplicaProfile(cfg.default_a_ms_per_token, cfg.default_c_ms,
                          cfg.saturation_tokens or chunk_tokens or 256, kv_bytes_per_token)


async def profile_engine(engine: ReplicaEngine, cfg: ProfilingConfig, model: str,
                         max_len_tokens: int, chunk_tokens: int | None = None) -> ReplicaProfile:
    """``S`` is ``cfg.saturation_tokens`` if set, else the engine's prefill chunk
    (``max_num_batched_tokens``): on vLLM a recomputation runs in chunks of that many
    tokens per step, which is what LAMPS's discard waste counts; the measured end of the
    flat part (none on a CPU, where every token costs) is only logged."""
    kv = engine.kv_bytes_per_token()
    if not cfg.enabled:
        return default_profile(cfg, kv, chunk_tokens)
    rng = random.Random(0)
    await engine.take_steps()  # drop anything before
    points: list[tuple[float, float]] = []
    for n in cfg.batch_token_counts:
        n = min(n, max_len_tokens - 2)
        times = []
        for _ in range(cfg.repeats):
            # Fresh random tokens: the prefix cache must not serve them.
            ids = [rng.randrange(100, 356) for _ in range(n)]
            req = ReplicaRequest(RequestHeader(f"profile-{uuid.uuid4().hex[:8]}", model), ids,
                                 SamplingSpec(max_tokens=1, ignore_eos=True))
            async for _ in engine.generate(req):
                pass
            steps = await engine.take_steps()
            prefill = [s.step_ms for s in steps if s.num_tokens >= n * 0.5]
            if prefill:
                times.append(max(prefill))
        if times:
            points.append((float(n), statistics.median(times)))
    if len(points) < 2:
        logger.warning("profiling measured too few steps (%s); using defaults", points)
        return default_profile(cfg, kv)
    measured = profile_from_points(points, kv)
    saturation = cfg.saturation_tokens or chunk_tokens or measured.saturation_tokens
    profile = ReplicaProfile(measured.a_ms_per_token, measured.c_ms, saturation, kv, None,
                             "profiled")
    logger.info("profiled engine: %s from %s (flat part ends at %d tokens; swap: unsupported "
                "on this platform)", profile.to_json(), points, measured.saturation_tokens)
    return profile
