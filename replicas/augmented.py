"""Augmented requests: turns of generation separated by API calls, executed by the
replica with emulated tools.

This is stock vLLM's behaviour, the baseline the later pause strategies are measured
against ("discard"): every API call ends the engine request; when the tool returns, the
next turn is a new engine request on the whole history (prompt, every generated token and
every tool result), and only the prefix cache may spare some recomputation.  The emulated
tool waits the given duration and returns deterministic filler tokens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from replicas.types import ReplicaRequest, TokenDelta

#: Filler tokens come from this id range, present in any vocabulary of ≥ 356 tokens.
FILLER_BASE_ID, FILLER_SPAN = 100, 256


def filler_tokens(request_id: str, turn: int, count: int) -> list[int]:
    """The tool result of one emulated call: deterministic for (request, turn)."""
    seed = zlib.crc32(f"{request_id}:{turn}".encode())
    return [FILLER_BASE_ID + (seed + 31 * j) % FILLER_SPAN for j in range(count)]


Generate = Callable[[ReplicaRequest], AsyncIterator[TokenDelta]]


async def run_augmented(generate: Generate, request: ReplicaRequest, *,
                        clock: Callable[[], float] = time.monotonic,
                        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                        on_pause: Callable[[bool], None] = lambda paused: None,
                        ) -> AsyncIterator[TokenDelta]:
    """Run every turn of ``request.augmentation``; yields token deltas tagged with their
    turn, an ``api_call`` event before each tool wait, and a last delta carrying the
    finish reason and the per-turn timings."""
    assert request.augmentation, "not an augmented request"
    history = list(request.prompt_token_ids)
    timings: list[dict[str, Any]] = []
    finish_reason: str | None = None
    num_prompt = len(request.prompt_token_ids)
    for index, turn in enumerate(request.augmentation):
        sampling = dataclasses.replace(request.sampling, max_tokens=turn.generate_tokens,
                                       min_tokens=turn.generate_tokens, ignore_eos=True)
        sub = dataclasses.replace(request, request_id=f"{request.request_id}-t{index}",
                                  prompt_token_ids=list(history), sampling=sampling,
                                  augmentation=None)
        submitted, first, generated = clock(), None, []
        cached = 0
        async for delta in generate(sub):
            if first is None and delta.token_ids:
                first = clock()
            generated += delta.token_ids
            finish_reason = delta.finish_reason or finish_reason
            cached = max(cached, delta.num_cached_tokens)
            delta.finish_reason, delta.num_prompt_tokens, delta.turn = None, num_prompt, index
            yield delta  # the engine made it for this call: retag in place, no copy
        ended = clock()
        record = {"turn": index, "context_tokens": len(history),
                  "generated_tokens": len(generated), "cached_tokens": cached,
                  "first_token_s": (first or ended) - submitted,
                  "generation_s": ended - (first or ended), "api_name": turn.api_name,
                  "api_wait_s": 0.0}
        history += generated
        if turn.api_name is not None:
            yield TokenDelta(text="", token_ids=[], num_prompt_tokens=num_prompt, turn=index,
                             info={"api_call": {"turn": index, "name": turn.api_name,
                                                "duration_s": turn.api_duration_s,
                                                "tokens": turn.api_tokens}})
            on_pause(True)
            try:
                started = clock()
                await sleep(turn.api_duration_s)
                record["api_wait_s"] = clock() - started
            finally:
                on_pause(False)
            history += filler_tokens(request.request_id, index, turn.api_tokens)
        timings.append(record)
    yield TokenDelta(text="", token_ids=[], finish_reason=finish_reason or "length",
                     num_prompt_tokens=num_prompt, turn=len(request.augmentation) - 1,
                     info={"turns": timings})
