"""The per-turn decisions of an augmented request, as a plain state machine with no engine
and no clock: the async turn runner (:mod:`replicas.turns`) drives it on the real engine,
the simulator drives it in simulated time.

One request goes ``turn_done`` → (``pause`` → ``resume``)* with, before each turn, the
policy's :class:`Outlook` (:meth:`TurnPlan.outlook`: the benchmark annotation's true
values for oracle policies, else the prediction, re-asked at every resume), and at each
call the strategy (:meth:`TurnPlan.choose`: the policy's least waste among the allowed
strategies; preserve only while a session is open and the pause budget allows it).

Recomputed tokens: after a discard the next turn is a new request over the whole history;
the tokens that had KV before the call and were not served by the prefix cache are
computed again (the call's result and the re-sent last token never had any).  A
preserved turn recomputes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field

from augserve_common.priors import DEFAULT_API_S, FALLBACK_OUTPUT_TOKENS
from predictor_service.types import Prediction
from replicas.policy import BatchLoad, Outlook, Pause, ReplicaPolicy, ReplicaProfile, Strategy
from replicas.types import AugTurn


def predicted_outlook(context_tokens: int, pred: Prediction | None, turn: AugTurn | None,
                      ) -> Outlook:
    """The outlook from a prediction (or the client's fallback numbers without one)."""
    output = pred.output_tokens if pred is not None else FALLBACK_OUTPUT_TOKENS
    api_s = None
    if turn is not None and turn.api_name is not None:
        durations = {d.name: d.mean_s for d in (pred.api_durations if pred else ())}
        api_s = durations.get(turn.api_name, DEFAULT_API_S)
    return Outlook(context_tokens, output, api_s, 0, output if api_s is not None else 0.0)


def oracle_outlook(context_tokens: int, turns: tuple[AugTurn, ...], index: int) -> Outlook:
    t = turns[index]
    after = float(sum(x.generate_tokens for x in turns[index + 1:]))
    return Outlook(context_tokens, float(t.generate_tokens),
                   t.api_duration_s if t.api_name else None, t.api_tokens, after)


@dataclass(slots=True)
class TurnPlan:
    """One request's turn bookkeeping (token counts only; the runner keeps the ids)."""

    policy: ReplicaPolicy
    #: Tokens of the context now: the prompt, every generated token and every result.
    context_tokens: int
    index: int = 0
    #: The next turn resumes a preserved session (sends only the result and last token).
    resumes_preserved: bool = False
    #: A strategy chosen at the current call (None between calls).
    strategy: Strategy | None = None
    #: Tokens that entered the context at the last call and never had KV (result + 1).
    fresh_tokens: int = 0
    recomputed_tokens: int = 0
    calls_by_strategy: dict[str, int] = field(default_factory=dict)

    def outlook(self, turns: tuple[AugTurn, ...], index: int,
                prediction: Prediction | None) -> Outlook:
        """The policy's view of turn ``index`` (``prediction``: the latest one)."""
        if self.policy.oracle:
            return oracle_outlook(self.context_tokens, turns, index)
        return predicted_outlook(self.context_tokens, prediction, turns[index])

    @property
    def may_preserve(self) -> bool:
        """The policy may ever preserve (so its turns run in one streaming session)."""
        return self.policy.waste is not None and Strategy.PRESERVE in self.policy.allowed

    def turn_done(self, index: int, generated_tokens: int, cached_tokens: int) -> int:
        """Turn ``index`` generated ``generated_tokens``; its prompt found ``cached_tokens``
        in the prefix cache.  Returns the tokens it recomputed."""
        preserved = self.resumes_preserved
        recomputed = (0 if preserved or index == 0
                      else max(self.context_tokens - cached_tokens - self.fresh_tokens, 0))
        self.recomputed_tokens += recomputed
        self.index = index
        self.context_tokens += generated_tokens
        self.resumes_preserved = False
        return recomputed

    def choose(self, outlook: Outlook, profile: ReplicaProfile, load: BatchLoad,
               can_preserve: bool) -> Strategy:
        """The strategy for the call after this turn (``can_preserve``: a session is open
        and the pause budget allows one more)."""
        pause = Pause(self.context_tokens,
                      outlook.api_s if outlook.api_s is not None else DEFAULT_API_S)
        strategy = self.policy.strategy(pause, profile, load, can_preserve)
        self.strategy = strategy
        self.calls_by_strategy[strategy.value] = self.calls_by_strategy.get(strategy.value, 0) + 1
        return strategy

    def resume(self, result_tokens: int, demoted: bool) -> None:
        """The call returned ``result_tokens``; a preserved session resumes unless the
        pause budget demoted it meanwhile."""
        self.resumes_preserved = self.strategy is Strategy.PRESERVE and not demoted
        self.strategy = None
        self.fresh_tokens = result_tokens + 1
        self.context_tokens += result_tokens
