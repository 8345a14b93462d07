"""Fakes for unit tests: same interfaces as the real parts, no Ray, no engine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from replicas.types import ReplicaLimits, ReplicaStats


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait for a state (polling every 10 ms), never a guessed duration."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class FakeClock:
    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def replica_stats(replica_id: str, *, gpu_class: str = "large", model: str = "m",
                  max_num_seqs: int = 2, max_waiting: int = 1, num_waiting: int = 0,
                  tokens_per_s: float = 100.0, alive: bool = True,
                  active: tuple[str, ...] = ()) -> ReplicaStats:
    return ReplicaStats(replica_id=replica_id, deployment=f"replica-{gpu_class}",
                        gpu_class=gpu_class, model=model,
                        limits=ReplicaLimits(max_num_seqs, max_waiting),
                        num_waiting=num_waiting, output_tokens_per_s=tokens_per_s,
                        engine_alive=alive, active_request_ids=active)
