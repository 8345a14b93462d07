"""Predictions as in serving: the predictor's own core (:class:`PredictorCore`, the same
length and API-duration models, learning online from completed requests) runs in-process
and is called synchronously where the ingress (at arrival) and the replicas (at every
resume) call the gRPC server.  For the papers' studies, :class:`OraclePredictions` gives
the true lengths and durations, optionally with seeded Gaussian noise on the lengths."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Protocol

from predictor_service.config import PredictorConfig
from predictor_service.core import PredictorCore
from predictor_service.types import (ApiDurationPrediction, LengthQuery, Observation,
                                     Prediction)
from replicas.types import AugTurn

#: The prompt tail the replicas send at a resume (``ReplicaCore._predict_resume``).
RESUME_TAIL_TOKENS = 512


class Predictions(Protocol):
    def at_arrival(self, model: str, prompt: Sequence[int], turns: tuple[AugTurn, ...],
                   max_tokens: int) -> Prediction | None: ...

    def at_resume(self, model: str, history: Sequence[int], turns: tuple[AugTurn, ...],
                  index: int, max_tokens: int) -> Prediction | None: ...

    def observe(self, model: str, prompt: Sequence[int], turn_tokens: Sequence[int],
                api_calls: Sequence[tuple[str, float]]) -> None: ...


def _api_names(turns: tuple[AugTurn, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.api_name for t in turns if t.api_name))


class CorePredictions:
    """The predictor core, fed what the ingress and the replicas feed the server."""

    def __init__(self, config: PredictorConfig, clock: Callable[[], float]) -> None:
        self.core = PredictorCore(config, clock=clock)
        self.core.load_embedder()
        self.num_refits = 0

    def at_arrival(self, model: str, prompt: Sequence[int], turns: tuple[AugTurn, ...],
                   max_tokens: int) -> Prediction | None:
        return self.core.predict_now([LengthQuery(
            model=model, prompt_token_ids=tuple(prompt), prompt_tokens=len(prompt),
            api_names=_api_names(turns), max_tokens=max_tokens)])[0]

    def at_resume(self, model: str, history: Sequence[int], turns: tuple[AugTurn, ...],
                  index: int, max_tokens: int) -> Prediction | None:
        turn = turns[index]
        return self.core.predict_now([LengthQuery(
            model=model, prompt_token_ids=tuple(history[-RESUME_TAIL_TOKENS:]),
            prompt_tokens=len(history), api_names=(turn.api_name,) if turn.api_name else (),
            max_tokens=max_tokens)])[0]

    def observe(self, model: str, prompt: Sequence[int], turn_tokens: Sequence[int],
                api_calls: Sequence[tuple[str, float]]) -> None:
        self.core.observe([Observation(model=model, prompt_token_ids=tuple(prompt),
                                       prompt_tokens=len(prompt),
                                       output_tokens_per_turn=tuple(turn_tokens),
                                       api_calls=tuple(api_calls))])
        self.num_refits += self.core.refit_now()


class OraclePredictions:
    """The true turn length (× (1 + N(0, noise)), at least 1) and the true call duration."""

    def __init__(self, rng: random.Random, noise: float = 0.0) -> None:
        self._rng = rng
        self.noise = noise

    def _length(self, true_tokens: int) -> float:
        if self.noise <= 0:
            return float(true_tokens)
        return max(1.0, true_tokens * (1.0 + self._rng.gauss(0.0, self.noise)))

    def _prediction(self, turns: tuple[AugTurn, ...], index: int) -> Prediction:
        turn = turns[index]
        n = self._length(turn.generate_tokens)
        durations = tuple(ApiDurationPrediction(t.api_name, t.api_duration_s, t.api_duration_s, 1)
                          for t in turns[index:index + 1] if t.api_name)
        return Prediction(n, n, n, api_durations=durations, fallback=False, length_model="oracle")

    def at_arrival(self, model: str, prompt: Sequence[int], turns: tuple[AugTurn, ...],
                   max_tokens: int) -> Prediction | None:
        return self._prediction(turns, 0)

    def at_resume(self, model: str, history: Sequence[int], turns: tuple[AugTurn, ...],
                  index: int, max_tokens: int) -> Prediction | None:
        return self._prediction(turns, index)

    def observe(self, model: str, prompt: Sequence[int], turn_tokens: Sequence[int],
                api_calls: Sequence[tuple[str, float]]) -> None:
        return None
