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


async def test_the_final_delta_is_not_held_back():
    async def slow_then_final():
        yield TokenDelta(text="a", token_ids=[1])
        yield TokenDelta(text="b", token_ids=[2])  # arrives inside the interval
        yield TokenDelta(text="", token_ids=[3], finish_reason="length")

    loop = asyncio.get_running_loop()
    start = loop.time()
    out = [d async for d in coalesce(slow_then_final(), interval_s=5.0)]
    assert loop.time() - start < 1.0  # not the 5 s interval
    assert [t for d in out for t in d.token_ids] == [1, 2, 3]
    assert out[-1].finish_reason == "length"


async def test_a_source_cancelled_on_its_own_is_an_error_not_a_normal_end():
    async def cancelled_source():
        yield TokenDelta(text="a", token_ids=[1])
        raise asyncio.CancelledError()

    with pytest.raises(RuntimeError, match="cancelled"):
        async for _ in coalesce(cancelled_source(), interval_s=0.01):
            pass
