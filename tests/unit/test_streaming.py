import asyncio

import pytest

from orchestrator.dispatcher import Assignment
from orchestrator.errors import InvalidRequestError, ReplicaFailedError
from orchestrator.outcomes import Outcome
from orchestrator.queued import QueuedRequest
from orchestrator.streaming import RequestRun
from replicas.engine import EngineRequestError
from replicas.types import ReplicaRequest, RequestHeader, SamplingSpec, TokenDelta


class FakeStream:
    """Same surface as Serve's DeploymentResponseGenerator: async iteration and cancel()."""

    def __init__(self, deltas, fail_after=None, error=RuntimeError("actor died")):
        self.deltas, self.fail_after, self.error, self.cancelled = deltas, fail_after, error, False

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        for i, d in enumerate(self.deltas):
            if self.fail_after is not None and i >= self.fail_after:
                raise self.error
            await asyncio.sleep(0)
            yield d
        if self.fail_after is not None and self.fail_after >= len(self.deltas):
            raise self.error

    def cancel(self):
        self.cancelled = True


def make_run(streams, retries=None):
    """``released``: what the run released itself; ``retries``: the ``retry`` flag of each
    enqueue (a retry's release of the failed attempt is the queue manager's, on enqueue)."""
    released, assigned = [], []
    retries = [] if retries is None else retries
    streams = list(streams)

    async def enqueue(q, retry):
        retries.append(retry)
        a = Assignment(q.request_id, f"rep{len(assigned)}", "d", "large", 0.0)
        assigned.append(a)
        return a

    def open_stream(a, r):
        return streams.pop(0)

    req = ReplicaRequest(RequestHeader("r1", "m"), [1, 2, 3], SamplingSpec(max_tokens=3))
    run = RequestRun(QueuedRequest(req.header, 3, 3), req, enqueue=enqueue,
                     open_stream=open_stream, release=lambda i, o, m=None: released.append((i, o)))
    return run, released, assigned


def deltas(n):
    return [TokenDelta(text=f"t{i}", token_ids=[i], finish_reason="length" if i == n - 1 else None,
                       num_prompt_tokens=3) for i in range(n)]


async def collect(run):
    await run.admit()
    return [d.text async for d in run.deltas()]


async def test_streams_and_releases_once():
    run, released, _ = make_run([FakeStream(deltas(3))])
    assert await collect(run) == ["t0", "t1", "t2"]
    assert released == [("r1", Outcome.COMPLETED)]
    assert run.trace.num_output_tokens == 3 and run.trace.finish_reason == "length"


async def test_retries_on_another_replica_before_first_token():
    broken, retries = FakeStream(deltas(3), fail_after=0), []
    run, released, assigned = make_run([broken, FakeStream(deltas(2))], retries)
    assert await collect(run) == ["t0", "t1"]
    assert broken.cancelled and len(assigned) == 2 and run.trace.attempts == 2
    assert retries == [False, True]  # queued again as a retry, which releases the first try
    assert released == [("r1", Outcome.COMPLETED)]


async def test_no_retry_after_tokens_were_sent():
    retries = []
    run, released, _ = make_run([FakeStream(deltas(3), fail_after=1), FakeStream(deltas(3))],
                                retries)
    with pytest.raises(ReplicaFailedError):
        await collect(run)
    assert retries == [False] and released == [("r1", Outcome.FAILED)]


async def test_engine_refusal_is_a_400():
    run, released, _ = make_run([FakeStream([], fail_after=0, error=EngineRequestError("bad"))])
    with pytest.raises(InvalidRequestError):
        await collect(run)
    assert released == [("r1", Outcome.REJECTED_INVALID)]


async def test_consumer_going_away_cancels_the_stream():
    stream = FakeStream(deltas(10))
    run, released, _ = make_run([stream])
    await run.admit()
    gen = run.deltas()
    await gen.__anext__()
    task = asyncio.ensure_future(gen.__anext__())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.cancelled and released == [("r1", Outcome.CANCELLED)]
