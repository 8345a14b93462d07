"""The pause budget: preserved sessions hold KV and a sequence slot while their API runs,
and vLLM never takes them back.  When KV usage passes the watermark or paused sessions
would take the reserved slots, sessions are demoted to discard, the one whose remaining
hold (``C × remaining T̂``, the preserve waste still to come) is largest first.  Plain
Python; the replica's budget loop applies the decisions (closing the sessions)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(slots=True)
class PausedSession:
    request_id: str
    context_tokens: int
    #: When the call is expected to end (same clock as ``now_s``).
    api_end_s: float
    demote: Callable[[], Awaitable[None]]
    demoted: bool = False

    def remaining_waste(self, now_s: float) -> float:
        return self.context_tokens * max(self.api_end_s - now_s, 0.0)


def is_starved(num_waiting: int, num_running: int, num_paused: int, max_num_seqs: int,
               kv_usage: float, kv_watermark: float) -> bool:
    """Requests wait while paused sessions hold the slots or the KV they need: some wait,
    and running plus paused fill every slot or KV usage is within 10 % of the watermark."""
    return num_waiting > 0 and (num_running + num_paused >= max_num_seqs
                                or kv_usage > kv_watermark * 0.9)


class PauseBudget:
    def __init__(self, max_paused: int, kv_watermark: float) -> None:
        self.max_paused = max(max_paused, 0)
        self.kv_watermark = kv_watermark
        self.paused: dict[str, PausedSession] = {}
        self.num_demotions = 0

    def can_preserve(self, kv_usage: float) -> bool:
        return len(self.paused) < self.max_paused and kv_usage < self.kv_watermark

    def hold(self, session: PausedSession) -> None:
        self.paused[session.request_id] = session

    def release(self, request_id: str) -> PausedSession | None:
        return self.paused.pop(request_id, None)

    def to_demote(self, kv_usage: float, now_s: float, starved: bool = False) -> list[PausedSession]:
        """The sessions to demote now (and forget); the caller closes them.  One at a time
        (the caller looks again a moment later) while KV usage is over the watermark or
        ``starved`` (requests wait while paused sessions hold the slots or KV they need)."""
        n = max(len(self.paused) - self.max_paused, 0)
        if kv_usage > self.kv_watermark or starved:
            n = max(n, 1)
        if n == 0 or not self.paused:
            return []
        victims = sorted(self.paused.values(), key=lambda s: s.remaining_waste(now_s),
                         reverse=True)[:n]
        for s in victims:
            s.demoted = True
            del self.paused[s.request_id]
        self.num_demotions += len(victims)
        return victims

    def __len__(self) -> int:
        return len(self.paused)
