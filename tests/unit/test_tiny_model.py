"""The tiny model builder (transformers only; no engine)."""

import hashlib

import pytest

from replicas.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    a = build_tiny_model(tmp_path_factory.mktemp("a"))
    b = build_tiny_model(tmp_path_factory.mktemp("b"))
    return a, b


def digest(path):
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_build_is_deterministic_and_idempotent(built):
    a, b = built
    assert digest(a) == digest(b)
    mtime = (a / "model.safetensors").stat().st_mtime
    build_tiny_model(a)  # already built: kept as is
    assert (a / "model.safetensors").stat().st_mtime == mtime


def test_tokenizer_has_visible_tool_call_tokens_and_hermes_template(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built[0])
    call, end = tok.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    assert tok.encode("<tool_call>", add_special_tokens=False) == [call]
    assert tok.encode("</tool_call>", add_special_tokens=False) == [end]
    text = tok.decode(tok.encode('<tool_call>{"name": "f"}</tool_call>'), skip_special_tokens=True)
    assert text == '<tool_call>{"name": "f"}</tool_call>'
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    msgs = [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
            {"role": "tool", "content": "sunny"}]
    rendered = tok.apply_chat_template(msgs, tools=tools, add_generation_prompt=True, tokenize=False)
    assert "<tools>" in rendered and '"get_weather"' in rendered
    assert '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>' in rendered
    assert "<tool_response>\nsunny\n</tool_response>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
