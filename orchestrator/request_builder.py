"""Model-dependent validation and the translation of an OpenAI request into the queue
entry and the replica request."""

from __future__ import annotations

import time
from dataclasses import dataclass

from orchestrator.config import AppConfig
from orchestrator.errors import InvalidRequestError
from orchestrator.models import ServedModel
from orchestrator.protocol import ChatCompletionRequest, CompletionRequest, SLOTarget
from orchestrator.queued import QueuedRequest
from replicas.types import AugTurn, ReplicaRequest, RequestHeader, SamplingSpec, SLOSpec


@dataclass
class BuiltRequest:
    queued: QueuedRequest
    replica: ReplicaRequest


def resolve_slo(slo: str | SLOTarget | None, config: AppConfig) -> SLOSpec | None:
    if slo is None:
        slo = config.queue.default_slo_class
        if slo is None:
            return None
    if isinstance(slo, str):
        cls = config.slo_classes.get(slo)
        if cls is None:
            raise InvalidRequestError(
                f"slo: unknown SLO class {slo!r}; known: {sorted(config.slo_classes)}", param="slo")
        return SLOSpec(class_name=slo, ttft_ms=cls.ttft_ms, e2e_ms=cls.e2e_ms)
    return SLOSpec(ttft_ms=slo.ttft_ms, e2e_ms=slo.e2e_ms)


@dataclass
class Prompt:
    """The prompt as tokens, and as text when the client sent text (the predictor's input:
    for chat, the messages' contents one per line, without the template's markup, so that
    the text ends with the latest message as the trace's prompts do)."""

    ids: list[int]
    text: str = ""


def completion_prompt(req: CompletionRequest, model: ServedModel) -> Prompt:
    prompt = req.single_prompt()
    text = ""
    if isinstance(prompt, str):
        text = prompt
        ids = model.tokenizer.encode(prompt, add_special_tokens=False)
    else:
        ids = list(prompt)
        bad = [t for t in ids if not 0 <= t < model.vocab_size]
        if bad:
            raise InvalidRequestError(
                f"prompt: token ids {bad[:5]} are outside the vocabulary [0, {model.vocab_size})",
                param="prompt")
    if not ids:
        raise InvalidRequestError("prompt: the prompt is empty", param="prompt")
    return Prompt(ids, text)


def chat_prompt(req: ChatCompletionRequest, model: ServedModel) -> Prompt:
    try:
        text = model.tokenizer.apply_chat_template(
            req.template_messages(), tools=req.template_tools(), add_generation_prompt=True,
            tokenize=False)
    except Exception as exc:  # noqa: BLE001 - template errors are the client's input
        raise InvalidRequestError(f"messages: the chat template failed: {exc}",
                                  param="messages") from None
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise InvalidRequestError("messages: the conversation renders to nothing", param="messages")
    return Prompt(ids, "\n".join(t for m in req.messages if (t := m.text())))


def augmentation_turns(req: CompletionRequest | ChatCompletionRequest, num_prompt: int,
                       limit: int) -> tuple[AugTurn, ...] | None:
    """The validated turns of an augmented request (None for a plain request)."""
    if req.augmentation is None:
        return None
    turns = tuple(AugTurn(t.generate_tokens, t.api_name, t.api_duration_s or 0.0,
                          t.api_tokens or 0) for t in req.augmentation)
    total = num_prompt + sum(t.generate_tokens + t.api_tokens for t in turns)
    if total > limit:
        raise InvalidRequestError(
            f"augmentation: the prompt ({num_prompt} tokens) plus every turn's generated and "
            f"API tokens comes to {total}, beyond the context length of {limit} tokens",
            param="augmentation", code="context_length_exceeded")
    return turns


def check_tools(req: CompletionRequest | ChatCompletionRequest, config: AppConfig) -> None:
    """With server-side tools registered, a chat request may offer only those."""
    offered = getattr(req, "tools", None) or []
    if not config.tools or not offered or getattr(req, "tool_choice", None) == "none":
        return
    unknown = [t.function.name for t in offered if t.function.name not in config.tools]
    if unknown:
        raise InvalidRequestError(
            f"tools: {', '.join(repr(n) for n in unknown)} not registered on this server; "
            f"registered tools: {', '.join(sorted(config.tools))}", param="tools",
            code="unknown_tool")


def server_tools(req: CompletionRequest | ChatCompletionRequest, config: AppConfig,
                 turns: object) -> tuple[str, ...]:
    """The registered tools a chat request offers, which the replica then runs itself
    (none for augmented requests, whose calls the annotation gives)."""
    offered = getattr(req, "tools", None) or []
    if not config.tools or turns is not None or getattr(req, "tool_choice", None) == "none":
        return ()
    return tuple(t.function.name for t in offered)


def build_request(req: CompletionRequest | ChatCompletionRequest, prompt_ids: list[int],
                  model: ServedModel, config: AppConfig, request_id: str) -> BuiltRequest:
    limit = model.max_model_len
    check_tools(req, config)
    turns = augmentation_turns(req, len(prompt_ids), limit)
    if turns is not None:
        generated = sum(t.generate_tokens for t in turns)
        given = (req.requested_max_tokens() if isinstance(req, ChatCompletionRequest)
                 else req.max_tokens)
        if given is not None and given != generated:
            raise InvalidRequestError(
                f"max_tokens: {given} differs from the {generated} tokens the augmentation "
                "generates; leave it out", param="max_tokens")
        return _build(req, prompt_ids, model, config, request_id, generated, turns)
    if isinstance(req, ChatCompletionRequest):
        requested, param = req.requested_max_tokens(), (
            "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens")
        max_tokens = requested if requested is not None else limit - len(prompt_ids)
    else:
        requested, param = req.max_tokens, "max_tokens"
        max_tokens = requested if requested is not None else min(
            config.ingress.default_completion_max_tokens, limit - len(prompt_ids))
    if requested is not None and requested > limit:
        raise InvalidRequestError(
            f"{param}: {requested} exceeds the model's context length of {limit} tokens", param=param)
    if len(prompt_ids) >= limit or len(prompt_ids) + max_tokens > limit:
        prompt_param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
        blamed = prompt_param if requested is None else param
        raise InvalidRequestError(
            f"{blamed}: this model's maximum context length is {limit} tokens; the prompt has "
            f"{len(prompt_ids)} tokens and {max(max_tokens, 1)} more were requested",
            param=blamed, code="context_length_exceeded")
    return _build(req, prompt_ids, model, config, request_id, max_tokens, None)


def _build(req: CompletionRequest | ChatCompletionRequest, prompt_ids: list[int],
           model: ServedModel, config: AppConfig, request_id: str, max_tokens: int,
           turns: tuple[AugTurn, ...] | None) -> BuiltRequest:
    if req.min_tokens > max_tokens:
        raise InvalidRequestError(
            f"min_tokens: {req.min_tokens} is larger than max_tokens {max_tokens}", param="min_tokens")
    stops = req.stop_list()
    if len(stops) > config.ingress.max_stop_sequences:
        raise InvalidRequestError(
            f"stop: at most {config.ingress.max_stop_sequences} stop sequences", param="stop")
    if any(s == "" for s in stops):
        raise InvalidRequestError("stop: empty stop strings are not allowed", param="stop")
    stop_ids = tuple(req.stop_token_ids or ())
    if any(not 0 <= t < model.vocab_size for t in stop_ids):
        raise InvalidRequestError("stop_token_ids: ids outside the vocabulary", param="stop_token_ids")
    bias = None
    if req.logit_bias:
        bias = {int(k): float(v) for k, v in req.logit_bias.items()}
        if any(not 0 <= t < model.vocab_size for t in bias):
            raise InvalidRequestError(
                f"logit_bias: token ids outside the vocabulary [0, {model.vocab_size})",
                param="logit_bias")
    slo = resolve_slo(req.slo, config)
    sampling = SamplingSpec(
        max_tokens=max_tokens, min_tokens=req.min_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=0 if req.top_k is None or req.top_k == -1 else req.top_k,
        seed=req.seed, stop=tuple(stops), stop_token_ids=stop_ids, ignore_eos=req.ignore_eos,
        logit_bias=bias, presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty, repetition_penalty=req.repetition_penalty,
        skip_special_tokens=req.skip_special_tokens)
    header = RequestHeader(request_id=request_id, model=model.name, priority=req.priority,
                           slo=slo, session_id=req.session_id, arrival_s=time.time())
    queued = QueuedRequest(header, num_prompt_tokens=len(prompt_ids), max_tokens=max_tokens,
                           num_turns=len(turns) if turns else 1)
    replica = ReplicaRequest(header, prompt_ids, sampling, augmentation=turns,
                             tool_names=server_tools(req, config, turns))
    return BuiltRequest(queued, replica)
