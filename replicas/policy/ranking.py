"""The ranking glue of a replica's waiting queue, one implementation for the vLLM
scheduler subclass (:mod:`replicas.vllm_scheduler`), the simulator's engine model and
``bench lamps-overhead``.

Per engine step (:meth:`WaitingRanker.before_step` / :meth:`WaitingRanker.after_step`):

1. every ``rerank_every_steps`` steps, when anyone waits: the batch load is read afresh,
   the live profile (an :class:`OnlineFit` of the measured step times) replaces the start
   one (``live_profile``), every cached score is dropped and the queue re-sorted;
   in between, a request entering the queue is scored once, with the load and profile of
   the last re-rank (its score is cached until the next one);
2. the engine admits;
3. the starvation pass (:class:`StarvationGuard`, LAMPS §5) counts a pass for every
   request still waiting that is older than the newest admitted one, and re-sorts when
   it promotes someone;
4. the step's measured time feeds the online fit (:meth:`record_step`).

Requests are duck-typed: ``request_id``, ``priority``, ``arrival_time``; their outlook
comes from the ``outlook_of`` function given (the vLLM scheduler reads
``extra_args``; the simulator its own request).  Plain Python, no clock of its own."""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable
from typing import Any, Generic, Protocol, TypeVar

from augserve_common.priors import DEFAULT_A_MS_PER_TOKEN, DEFAULT_C_MS
from replicas.policy.policies import Outlook, ReplicaPolicy, make_policy
from replicas.policy.profile import OnlineFit, ReplicaProfile
from replicas.policy.starvation import RankKey, StarvationGuard
from replicas.policy.waiting import RankedQueue
from replicas.policy.waste import BatchLoad

class Rankable(Protocol):
    """What the ranker reads of a request (vLLM's ``Request``, the simulator's, a test's)."""

    @property
    def request_id(self) -> str: ...

    @property
    def priority(self) -> int: ...

    @property
    def arrival_time(self) -> float: ...


R = TypeVar("R", bound=Rankable)

#: Defaults of the replica's ``scheduling`` config (``replicas.config.SchedulingConfig``
#: reads them from here; the engine's scheduler starts with them until configured).
RERANK_EVERY_STEPS = 4
STARVATION_THRESHOLD_STEPS = 100

#: Errors a malformed outlook may raise while scoring; the request then keeps arrival order.
_SCORE_ERRORS = (KeyError, TypeError, ValueError, OverflowError, ZeroDivisionError)


class WaitingRanker(Generic[R]):
    def __init__(self, outlook_of: Callable[[Any], Outlook | None],
                 policy: ReplicaPolicy | None = None, profile: ReplicaProfile | None = None, *,
                 starvation_threshold_steps: int | None = STARVATION_THRESHOLD_STEPS,
                 rerank_every_steps: int = RERANK_EVERY_STEPS, live_profile: bool = True) -> None:
        self._outlook_of = outlook_of
        self.policy = policy or make_policy("fcfs")
        self.profile = profile or ReplicaProfile(DEFAULT_A_MS_PER_TOKEN, DEFAULT_C_MS, 256, 0)
        self.fit = OnlineFit(self.profile)
        self.guard = StarvationGuard(starvation_threshold_steps)
        self.rerank_every_steps = max(1, int(rerank_every_steps))
        self.live_profile = live_profile
        self.load = BatchLoad()
        self.num_steps = 0
        self._scores: dict[str, float | None] = {}

    def configure(self, policy: ReplicaPolicy, profile: ReplicaProfile, *,
                  starvation_threshold_steps: int | None, rerank_every_steps: int,
                  live_profile: bool) -> None:
        """New settings (the replica's ``configure`` call); scores and passes start over."""
        self.policy, self.profile = policy, profile
        self.fit = OnlineFit(profile)
        self.guard = StarvationGuard(starvation_threshold_steps)
        self.rerank_every_steps = max(1, int(rerank_every_steps))
        self.live_profile = live_profile
        self._scores.clear()

    def new_queue(self) -> RankedQueue[R]:
        return RankedQueue(self.key)

    # -- order -------------------------------------------------------------------------
    def score(self, request: Any) -> float | None:
        """The policy's cached score of ``request`` (None: arrival order)."""
        if not self.policy.ranks:
            return None
        rid = request.request_id
        if rid not in self._scores:
            try:  # in the engine core a bad outlook must never kill it
                o = self._outlook_of(request)
                score = None if o is None else self.policy.score(o, self.profile, self.load)
            except _SCORE_ERRORS:
                score = None
            self._scores[rid] = score if score is None or math.isfinite(score) else None
        return self._scores[rid]

    def key(self, request: Any) -> RankKey:
        return RankKey.of(request.request_id, request.priority, request.arrival_time,
                          self.score(request), self.guard.promoted(request.request_id))

    # -- one engine step ---------------------------------------------------------------
    def before_step(self, waiting: RankedQueue[R], load: Callable[[], BatchLoad]) -> None:
        """Count the step; re-rank when due (``load`` is read only then)."""
        self.num_steps += 1
        if (self.policy.ranks and self.num_steps % self.rerank_every_steps == 0
                and len(waiting)):
            self.load = load()
            if self.live_profile:
                self.profile = self.fit.current()
            self._scores.clear()
            waiting.rekey()

    def after_step(self, waiting: RankedQueue[R], admitted: Iterable[Any]) -> None:
        """``admitted``: the requests this step took from ``waiting`` (the starvation pass
        counts against the newest of them)."""
        arrivals = []
        for request in admitted:
            arrivals.append(request.arrival_time)
            self.forget(request.request_id)
        if not arrivals or not (self.policy.ranks or self.guard.threshold_steps is not None):
            return
        if self.guard.after_step(((r.request_id, r.arrival_time) for r in waiting), arrivals):
            waiting.rekey()

    def record_step(self, num_tokens: int, step_ms: float) -> None:
        """A measured step for the live profile."""
        self.fit.add(num_tokens, step_ms)

    # -- bookkeeping -------------------------------------------------------------------
    def forget(self, request_id: str) -> None:
        self.guard.forget(request_id)
        self._scores.pop(request_id, None)

    def forget_missing(self, known: Container[str]) -> None:
        """Drop the state of requests no longer in ``known`` (left by any path)."""
        for rid in [r for r in self._scores if r not in known]:
            del self._scores[rid]
        for rid in [r for r in self.guard.ids() if r not in known]:
            self.guard.forget(rid)
