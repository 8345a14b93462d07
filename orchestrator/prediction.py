"""The ingress's side of the predictor: what it asks for each request, and what it
reports when a request has finished."""

from __future__ import annotations

from typing import Any

from orchestrator.config import AppConfig
from orchestrator.outcomes import Outcome
from orchestrator.protocol import ChatCompletionRequest, CompletionRequest
from orchestrator.streaming import RequestRun
from predictor_service.client import PredictorClient, resolver
from predictor_service.types import LengthQuery, Observation


def make_client(config: AppConfig, handle: Any) -> PredictorClient | None:
    """A client of the hosted predictor (through its deployment handle) or of the external
    one named in ``predictor.client.address``; None when the predictor is disabled."""
    if not config.predictor.enabled:
        return None
    cfg = config.predictor.client
    if cfg.address is None and handle is not None:
        return PredictorClient(cfg, resolve=resolver(handle))
    return PredictorClient(cfg, address=cfg.address)


def expected_api_names(req: CompletionRequest | ChatCompletionRequest, limit: int) -> tuple[str, ...]:
    """The APIs a request may call: its augmentation's, else the tools it offers."""
    if req.augmentation:
        names = [t.api_name for t in req.augmentation if t.api_name]
    elif isinstance(req, ChatCompletionRequest) and req.tools and req.tool_choice != "none":
        names = [t.function.name for t in req.tools]
    else:
        names = []
    return tuple(dict.fromkeys(names))[:limit]


def length_query(req: CompletionRequest | ChatCompletionRequest, run: RequestRun,
                 limit: int) -> LengthQuery:
    r = run.request
    return LengthQuery(model=r.model, prompt_text=run.prompt_text,
                       prompt_token_ids=() if run.prompt_text else tuple(r.prompt_token_ids),
                       prompt_tokens=len(r.prompt_token_ids),
                       api_names=expected_api_names(req, limit), max_tokens=r.sampling.max_tokens)


def observation(run: RequestRun) -> Observation | None:
    """What a completed request teaches the predictor (None for other outcomes)."""
    t, r = run.trace, run.request
    if t.outcome is not Outcome.COMPLETED:
        return None
    if t.turns is not None and r.augmentation:
        per_turn = tuple(int(x["generated_tokens"]) for x in t.turns)
        calls = tuple((turn.api_name, float(x["api_wait_s"]))
                      for turn, x in zip(r.augmentation, t.turns) if turn.api_name)
    else:
        per_turn, calls = (t.num_output_tokens,), ()
    return Observation(model=r.model, prompt_text=run.prompt_text,
                       prompt_token_ids=() if run.prompt_text else tuple(r.prompt_token_ids),
                       prompt_tokens=t.num_prompt_tokens, output_tokens_per_turn=per_turn,
                       api_calls=calls)
