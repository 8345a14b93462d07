"""Plain types of the predictor, shared by the server, the client and their callers
(cheap to pickle across Ray processes; no gRPC import)."""

from __future__ import annotations

from dataclasses import dataclass, field

#: LAMPS bins: bin i holds lengths [10i, 10i+10); the last bin is open-ended.
NUM_BINS = 50
BIN_WIDTH_TOKENS = 10


def bin_of(num_tokens: float) -> int:
    return min(NUM_BINS - 1, max(0, int(num_tokens // BIN_WIDTH_TOKENS)))


@dataclass(frozen=True, slots=True)
class LengthQuery:
    model: str
    prompt_text: str = ""
    prompt_token_ids: tuple[int, ...] = ()
    prompt_tokens: int = 0
    api_names: tuple[str, ...] = ()
    #: Cap of the prediction (the request's max_tokens); 0: none.
    max_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ApiDurationPrediction:
    name: str
    mean_s: float
    p90_s: float
    samples: int = 0


@dataclass(frozen=True, slots=True)
class Prediction:
    """Predicted output tokens of the next generation turn and durations of the APIs."""

    output_tokens: float
    output_tokens_p50: float
    output_tokens_p90: float
    bin_probs: tuple[float, ...] = ()
    api_durations: tuple[ApiDurationPrediction, ...] = ()
    predictor_version: int = 0
    fallback: bool = False
    length_model: str = ""

    def to_json(self) -> dict:
        return {"output_tokens": round(self.output_tokens, 2),
                "output_tokens_p50": round(self.output_tokens_p50, 2),
                "output_tokens_p90": round(self.output_tokens_p90, 2),
                "api_durations": {d.name: {"mean_s": round(d.mean_s, 4), "p90_s": round(d.p90_s, 4),
                                           "samples": d.samples} for d in self.api_durations},
                "predictor_version": self.predictor_version, "fallback": self.fallback,
                "length_model": self.length_model}


@dataclass(frozen=True, slots=True)
class Observation:
    """What happened: the prompt and the tokens generated per turn, API durations."""

    model: str
    prompt_text: str = ""
    prompt_token_ids: tuple[int, ...] = ()
    prompt_tokens: int = 0
    output_tokens_per_turn: tuple[int, ...] = ()
    api_calls: tuple[tuple[str, float], ...] = field(default_factory=tuple)
