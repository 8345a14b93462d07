"""Replica scheduling policies by name: how waiting requests are ranked and what happens
to a request's KV cache at each API call.  One small class per policy behind
:class:`ReplicaPolicy`; :func:`make_policy` is the registry.

* ``fcfs`` — vLLM's order; discard at every call (stock vLLM, the baseline).
* ``infercept`` — arrival order; per call the least INFERCEPT waste.
* ``sjf`` — shortest predicted remaining output first; discard.
* ``lamps`` — smallest predicted memory over time first (:func:`memory_over_time`), the
  strategy with the least LAMPS waste inside the score.
* ``lamps-oracle`` / ``infercept-oracle`` — the same, fed the true lengths and durations
  (benchmark annotations), as upper bounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from replicas.policy.profile import ReplicaProfile
from replicas.policy.waste import (BatchLoad, InferceptWaste, LampsWaste, Pause, Strategy,
                                   WasteModel)


@dataclass(frozen=True, slots=True)
class Outlook:
    """What a policy knows of a request's next steps (predicted; true for oracles)."""

    context_tokens: int
    #: Tokens this turn generates.
    output_tokens: float
    #: Duration of the API call after this turn; None when no call is expected.
    api_s: float | None = None
    #: Tokens the call returns into the context.
    api_tokens: int = 0
    #: Tokens generated after the call (the rest of the request).
    after_tokens: float = 0.0


def outlook_from_extra(o: object) -> Outlook | None:
    """The outlook a request carries in ``extra_args`` (None when absent or malformed:
    the request then keeps arrival order; the engine must never fail on it)."""
    if not isinstance(o, dict):
        return None
    try:
        values = [float(o["context_tokens"]), float(o["output_tokens"]),
                  float(o.get("api_tokens", 0)), float(o.get("after_tokens", 0.0))]
        api_s = None if o.get("api_s") is None else float(o["api_s"])
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) and v >= 0 for v in values + [api_s or 0.0]):
        return None
    return Outlook(int(values[0]), values[1], api_s, int(values[2]), values[3])


def generation_memory(context_tokens: float, num_tokens: float, step_s: float) -> float:
    """Token·seconds held while generating ``num_tokens`` from ``context_tokens``:
    ``t_d·(n·C + n(n+1)/2)``."""
    n = max(num_tokens, 0.0)
    return step_s * (n * context_tokens + n * (n + 1) / 2)


def memory_over_time(o: Outlook, prof: ReplicaProfile, load: BatchLoad,
                     waste: WasteModel) -> float:
    """LAMPS' score: memory × time of the turn, of the pause under the least-waste
    strategy, and of the part after the call (token·seconds)."""
    step_s = prof.step_s(max(load.tokens_in_flight, 1))
    total = generation_memory(o.context_tokens, o.output_tokens, step_s)
    if o.api_s is not None:
        pause = Pause(int(o.context_tokens + o.output_tokens), o.api_s)
        total += waste.least(pause, prof, load)[1]
        after_context = pause.context_tokens + o.api_tokens
        total += generation_memory(after_context, o.after_tokens, step_s)
    return total


@dataclass(slots=True)
class ReplicaPolicy:
    """Ranks waiting requests (``score``: lower runs first; None keeps arrival order) and
    picks the strategy at each API call."""

    name: str = "fcfs"
    #: Fed true values (benchmark annotations) instead of predictions.
    oracle: bool = False
    waste: WasteModel | None = None
    allowed: frozenset[Strategy] = field(default_factory=lambda: frozenset({Strategy.DISCARD}))

    @property
    def ranks(self) -> bool:
        return False

    def score(self, o: Outlook, prof: ReplicaProfile, load: BatchLoad) -> float | None:
        return None

    def strategy(self, pause: Pause, prof: ReplicaProfile, load: BatchLoad,
                 can_preserve: bool = True) -> Strategy:
        if self.waste is None:
            return Strategy.DISCARD
        allowed = set(self.allowed)
        if not prof.can_swap:
            allowed.discard(Strategy.SWAP)
        if not can_preserve:
            allowed.discard(Strategy.PRESERVE)
        return self.waste.choose(pause, prof, load, frozenset(allowed) or
                                 frozenset({Strategy.DISCARD}))


ALL_STRATEGIES = frozenset(Strategy)


class Fcfs(ReplicaPolicy):
    def __init__(self) -> None:
        super().__init__("fcfs")


class Infercept(ReplicaPolicy):
    def __init__(self, oracle: bool = False) -> None:
        super().__init__("infercept-oracle" if oracle else "infercept", oracle,
                         InferceptWaste(), ALL_STRATEGIES)


class ShortestJobFirst(ReplicaPolicy):
    def __init__(self) -> None:
        super().__init__("sjf")

    @property
    def ranks(self) -> bool:
        return True

    def score(self, o: Outlook, prof: ReplicaProfile, load: BatchLoad) -> float | None:
        return o.output_tokens + o.after_tokens


class Lamps(ReplicaPolicy):
    def __init__(self, oracle: bool = False) -> None:
        super().__init__("lamps-oracle" if oracle else "lamps", oracle, LampsWaste(),
                         ALL_STRATEGIES)

    @property
    def ranks(self) -> bool:
        return True

    def score(self, o: Outlook, prof: ReplicaProfile, load: BatchLoad) -> float | None:
        assert self.waste is not None
        return memory_over_time(o, prof, load, self.waste)


_REGISTRY: dict[str, Callable[[], ReplicaPolicy]] = {
    "fcfs": Fcfs,
    "infercept": Infercept,
    "infercept-oracle": lambda: Infercept(oracle=True),
    "sjf": ShortestJobFirst,
    "lamps": Lamps,
    "lamps-oracle": lambda: Lamps(oracle=True),
}

POLICY_NAMES = tuple(_REGISTRY)


def make_policy(name: str) -> ReplicaPolicy:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown replica policy {name!r}; known: {', '.join(POLICY_NAMES)}") from None
