"""Coalescing of token deltas between the engine and the network.

A tiny or fast model produces a token every few milliseconds; sending each as its own
message across Ray and HTTP costs more CPU than generating it.  :func:`coalesce` forwards
the first delta and the final one at once and otherwise at most one merged delta per
``interval_s``: tokens are never held back longer than that, and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator

from replicas.types import TokenDelta


def merge(deltas: list[TokenDelta]) -> TokenDelta:
    """One delta for consecutive deltas of the same turn without events."""
    if len(deltas) == 1:
        return deltas[0]
    last = deltas[-1]
    return TokenDelta(text="".join(d.text for d in deltas),
                      token_ids=[t for d in deltas for t in d.token_ids],
                      finish_reason=last.finish_reason, stop_reason=last.stop_reason,
                      num_prompt_tokens=max(d.num_prompt_tokens for d in deltas),
                      num_cached_tokens=max(d.num_cached_tokens for d in deltas),
                      turn=last.turn)


def merge_runs(deltas: list[TokenDelta]) -> list[TokenDelta]:
    """Merge runs of plain deltas; a turn change or an event delta starts a new run."""
    out: list[TokenDelta] = []
    run: list[TokenDelta] = []
    for delta in deltas:
        if run and (delta.turn != run[-1].turn or delta.info is not None
                    or run[-1].info is not None):
            out.append(merge(run))
            run = []
        run.append(delta)
    if run:
        out.append(merge(run))
    return out


async def coalesce(source: AsyncIterator[TokenDelta],
                   interval_s: float) -> AsyncGenerator[TokenDelta, None]:
    if interval_s <= 0:
        async for delta in source:
            yield delta
        return
    buffer: list[TokenDelta] = []
    arrived = asyncio.Event()
    done = asyncio.Event()
    error: BaseException | None = None

    async def pump() -> None:
        nonlocal error
        try:
            async for delta in source:
                buffer.append(delta)
                arrived.set()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we cancelled it: the consumer went away
            error = RuntimeError("the token source was cancelled")
        except Exception as exc:  # noqa: BLE001 - handed to the consumer below
            error = exc
        finally:
            done.set()
            arrived.set()

    task = asyncio.get_running_loop().create_task(pump())
    last_sent = -float("inf")
    try:
        while True:
            await arrived.wait()
            arrived.clear()
            wait = last_sent + interval_s - time.monotonic()
            if wait > 0 and not done.is_set():
                # hold tokens back at most until the interval ends, or the stream ends
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=wait)
            if buffer:
                runs = merge_runs(buffer)
                buffer.clear()
                last_sent = time.monotonic()
                for out in runs:
                    yield out
            if done.is_set() and not buffer:
                if error is not None:
                    raise error
                return
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
