"""Small engine models for hand-computed scenarios."""

from __future__ import annotations

import itertools

from replicas.policy import ReplicaProfile, make_policy
from replicas.policy.ranking import WaitingRanker
from simulator.engine import EngineLimits, EngineModel, EngineRequest
from simulator.kv import KvCache


def engine(num_blocks: int = 33, block_size: int = 4, max_num_seqs: int = 4,
           budget: int = 16, policy: str = "fcfs", watermark: float = 0.0) -> EngineModel:
    ranker: WaitingRanker[EngineRequest] = WaitingRanker(
        lambda r: r.outlook, make_policy(policy), ReplicaProfile(0.05, 10.0, 16, 1),
        starvation_threshold_steps=None, rerank_every_steps=1)
    tokens = itertools.count(5000)
    return EngineModel(EngineLimits(max_num_seqs, budget, 1024),
                       KvCache(num_blocks, block_size, watermark=watermark), ranker,
                       lambda r: next(tokens))


def req(rid: str, num_prompt: int, max_tokens: int, arrival: float = 0.0, priority: int = 0,
        session: bool = False, base: int = 0) -> EngineRequest:
    return EngineRequest(rid, list(range(base, base + num_prompt)), priority=priority,
                         arrival_time=arrival, max_tokens=max_tokens, session=session)


def scheduled(out) -> list[tuple[str, int]]:
    return [(r.request_id, n) for r, n in out.scheduled]
