"""Memory waste of the three ways to handle a request's KV cache during an API call, in
token·seconds (KV bytes per token cancel out when strategies are compared).

Two models behind one interface (ALGORITHMS.md):

* :class:`LampsWaste` — the LAMPS code's formulas.  With ``c_h = max(S − rb, 1)`` the free
  chunk of a batch (``rb`` tokens in flight this step, ``RB`` tokens held by running
  requests), ``f_s = t_fwd(S)``, ``f_ch = a·c_h`` and ``f_last = t_fwd(C mod c_h)`` (the
  LAMPS text leaves ``f_last`` implicit; this is the last chunk's step, a whole ``c_h`` when
  ``C`` divides evenly):
  preserve ``T̂·C``; discard ``f_s·n(n+1)/2·c_h + f_ch·n·RB + f_last·(RB + C mod c_h)``
  with ``n = ⌈C/c_h⌉ − 1``; swap ``t_swap·n_s·C + 2·t_swap_chunk·n_s·RB`` with
  ``n_s = max(⌈C/c_h⌉ − 1, 1)``.
* :class:`InferceptWaste` — INFERCEPT's: preserve ``T̂·C``; discard ``t_fwd(C)·(C + C_other)``;
  swap ``2·t_swap(C)·C_batch``.

Ties go preserve, then swap, then discard (LAMPS).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import NamedTuple

from replicas.policy.profile import ReplicaProfile


class Strategy(str, enum.Enum):
    PRESERVE = "preserve"
    SWAP = "swap"
    DISCARD = "discard"


#: Tie order: the first of equal wastes wins.
TIE_ORDER = (Strategy.PRESERVE, Strategy.SWAP, Strategy.DISCARD)


@dataclass(frozen=True, slots=True)
class BatchLoad:
    """The replica's batch at the moment of the decision."""

    #: Tokens processed per engine step now (``rb``): running decodes plus prefill chunks.
    tokens_in_flight: int = 0
    #: KV tokens held by running requests (``RB`` / ``C_other``).
    running_tokens: int = 0


class Pause(NamedTuple):
    """One paused request: its context and the (predicted or true) call duration (a
    tuple: built once per score, so cheaply)."""

    context_tokens: int
    api_s: float


class WasteModel:
    """Waste of each strategy for one pause; ``choose`` picks the least."""

    name = "base"

    def preserve(self, p: Pause, prof: ReplicaProfile, load: BatchLoad) -> float:
        return max(p.api_s, 0.0) * p.context_tokens

    def discard(self, p: Pause, prof: ReplicaProfile, load: BatchLoad) -> float:
        raise NotImplementedError

    def swap(self, p: Pause, prof: ReplicaProfile, load: BatchLoad) -> float:
        raise NotImplementedError

    def waste(self, strategy: Strategy, p: Pause, prof: ReplicaProfile, load: BatchLoad) -> float:
        if strategy is Strategy.PRESERVE:
            return self.preserve(p, prof, load)
        if strategy is Strategy.DISCARD:
            return self.discard(p, prof, load)
        if not prof.can_swap:
            return math.inf
        return self.swap(p, prof, load)

    def least(self, p: Pause, prof: ReplicaProfile, load: BatchLoad,
              allowed: frozenset[Strategy] = frozenset(TIE_ORDER)) -> tuple[Strategy, float]:
        """The strategy of least waste among ``allowed`` (ties in :data:`TIE_ORDER`) and
        its waste; discard, with its own waste, when none is finite."""
        best: Strategy | None = None
        best_w = math.inf
        for s in TIE_ORDER:
            if s not in allowed:
                continue
            w = self.waste(s, p, prof, load)
            if w < best_w:
                best, best_w = s, w
        if best is None:
            return Strategy.DISCARD, self.waste(Strategy.DISCARD, p, prof, load)
        return best, best_w

    def choose(self, p: Pause, prof: ReplicaProfile, load: BatchLoad,
               allowed: frozenset[Strategy] = frozenset(TIE_ORDER)) -> Strategy:
        return self.least(p, prof, load, allowed)[0]


class LampsWaste(WasteModel):
    name = "lamps"

    @staticmethod
    def _chunk(prof: ReplicaProfile, load: BatchLoad) -> int:
        return max(prof.saturation_tokens - load.tokens_in_flight, 1)

    def discard(self, p: Pause, prof: ReplicaProfile, load: BatchLoad) -> float:
        c_h = self._chunk(prof, load)
        C, RB = p.context_tokens, load.running_tokens
        n = math.ceil(C / c_h) - 1
        f_s = prof.step_s(prof.saturation_tokens)
        f_ch = prof.a_ms_per_token * c_h / 1000.0
        rest = C - n * c_h  # the last chunk: C mod c_h, or a whole c_h when C divides evenly
        f_last = prof.step_s(rest)
        return f_s * (1 + n) * n / 2 * c_h + f_ch * n * RB + f_last * (RB + rest)

    def swap(self, p: Pause, prof: ReplicaProfile, load: BatchLoad) -> float:
        c_h = self._chunk(prof, load)
        C, RB = p.context_tokens, load.running_tokens
        n_s = max(math.ceil(C / c_h) - 1, 1)
        per_token = prof.swap_s_per_token()
        return per_token * n_s * C + 2 * per_token * c_h * n_s * RB


class InferceptWaste(WasteModel):
    name = "infercept"

    def discard(self, p: Pause, prof: ReplicaProfile, load: BatchLoad) -> float:
        return prof.step_s(p.context_tokens) * (p.context_tokens + load.running_tokens)

    def swap(self, p: Pause, prof: ReplicaProfile, load: BatchLoad) -> float:
        batch = p.context_tokens + load.running_tokens
        return 2 * prof.swap_s_per_token() * p.context_tokens * batch
