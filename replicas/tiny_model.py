"""Build the project's own tiny random-weight Llama and its tokenizer (no downloads).

The model is seeded, so two builds give the same weights; the tokenizer is a byte-level
BPE trained on ``replicas/data/corpus.txt`` with ChatML and Hermes tool-call special
tokens, and the chat template (``replicas/data/chat_template.jinja``) renders ``tools``
and tool results the way Hermes-style models expect.  Random weights produce gibberish:
tests drive lengths with ``max_tokens``/``ignore_eos`` and force tokens with ``logit_bias``.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)

#: Bump when the recipe changes, so that ``make setup`` rebuilds cached models.
RECIPE_VERSION = 2

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
)
#: Tokens that stay visible in decoded text (a client must see the tool-call markup).
VISIBLE_SPECIAL_TOKENS: frozenset[str] = frozenset(
    {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"}
)
MARKER_FILE = "augserve_tiny_model.json"


def _data_text(name: str) -> str:
    return resources.files("replicas").joinpath("data").joinpath(name).read_text(encoding="utf-8")


def _train_tokenizer(target_vocab_size: int):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=target_vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = _data_text("corpus.txt").splitlines()
    tok.train_from_iterator(corpus, trainer=trainer)
    # Tool-call markup keeps fixed ids but is not "special": decoding keeps it visible,
    # as in Hermes/Qwen tokenizers, so clients and tool parsers can see the calls.
    spec = json.loads(tok.to_str())
    for added in spec["added_tokens"]:
        if added["content"] in VISIBLE_SPECIAL_TOKENS:
            added["special"] = False
    tok = Tokenizer.from_str(json.dumps(spec))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    fast.chat_template = _data_text("chat_template.jinja")
    return fast


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, vocab_size: int = 1024,
                     max_position_embeddings: int = 8192, force: bool = False) -> Path:
    """Write a tiny Llama + tokenizer into ``out_dir`` and return the path.

    Idempotent: an existing build of the same recipe and arguments is kept.
    """
    out = Path(out_dir)
    recipe = {"recipe_version": RECIPE_VERSION, "seed": seed, "vocab_size": vocab_size,
              "max_position_embeddings": max_position_embeddings}
    marker = out / MARKER_FILE
    if not force and marker.is_file():
        try:
            if json.loads(marker.read_text()) == recipe:
                logger.info("tiny model already built at %s", out)
                return out
        except json.JSONDecodeError:
            pass
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    padded_vocab = ((len(tokenizer) + 63) // 64) * 64
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = LlamaConfig(
        vocab_size=padded_vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    marker.write_text(json.dumps(recipe))
    logger.info("built tiny model (vocab %d, %d params) at %s", padded_vocab,
                sum(p.numel() for p in model.parameters()), out)
    return out
