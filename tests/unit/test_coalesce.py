import asyncio

import pytest

from replicas.coalesce import coalesce
from replicas.types import TokenDelta


async def source(n, gap_s=0.0, fail_at=None):
    for i in range(n):
        if fail_at == i:
            raise RuntimeError("engine failed")
        await asyncio.sleep(gap_s)
        yield TokenDelta(text=f"<{i}>", token_ids=[i], finish_reason="length" if i == n - 1 else None,
                         num_prompt_tokens=7)


async def test_fast_tokens_are_merged_without_loss():
    out = [d async for d in coalesce(source(200), interval_s=0.05)]
    assert len(out) < 20
    assert [t for d in out for t in d.token_ids] == list(range(200))
    assert "".join(d.text for d in out) == "".join(f"<{i}>" for i in range(200))
    assert out[0].token_ids == [0]  # the first token is not held back
    assert out[-1].finish_reason == "length" and out[-1].num_prompt_tokens == 7


async def test_zero_interval_passes_every_delta():
    out = [d async for d in coalesce(source(10), interval_s=0)]
    assert len(out) == 10


async def test_errors_reach_the_consumer_after_the_tokens_before_them():
    got = []
    with pytest.raises(RuntimeError, match="engine failed"):
        async for d in coalesce(source(10, fail_at=5), interval_s=0.01):
            got.extend(d.token_ids)
    assert got == [0, 1, 2, 3, 4]


async def test_closing_the_consumer_closes_the_source():
    closed = asyncio.Event()

    async def endless():
        try:
            i = 0
            while True:
                await asyncio.sleep(0.001)
                yield TokenDelta(text="x", token_ids=[i])
                i += 1
        finally:
            closed.set()

    gen = coalesce(endless(), interval_s=0.01)
    await gen.__anext__()
    await gen.aclose()
    assert closed.is_set()
