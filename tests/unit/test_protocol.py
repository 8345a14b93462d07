import pytest

from orchestrator.errors import InvalidRequestError
from orchestrator.protocol import ChatCompletionRequest, CompletionRequest, parse_request

BASE = {"model": "m", "prompt": "hi"}


@pytest.mark.parametrize("patch, param", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 2}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"logprobs": 2}, "logprobs"),
    ({"echo": True}, "echo"),
    ({"logit_bias": {"x": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 500}}, "logit_bias"),
    ({"priority": 1.5}, "priority"),
    ({"slo": {"ttft_ms": 0}}, "slo.ttft_ms"),
    ({"slo": {"unknown": 1}}, "slo.unknown"),
    ({"slo": {}}, "slo"),
    ({"session_id": ""}, "session_id"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, "a"]}, "prompt.1"),
    ({"model": ""}, "model"),
])
def test_completion_field_errors_name_the_field(patch, param):
    with pytest.raises(InvalidRequestError) as err:
        parse_request(CompletionRequest, {**BASE, **patch})
    assert err.value.status_code == 400
    assert err.value.param == param
    assert param.split(".")[0] in err.value.message


@pytest.mark.parametrize("body, param", [
    ({"prompt": "x"}, "model"),
    ({"model": "m"}, "prompt"),
])
def test_missing_fields(body, param):
    with pytest.raises(InvalidRequestError) as err:
        parse_request(CompletionRequest, body)
    assert err.value.param == param and err.value.code == "missing_required_parameter"


def test_body_must_be_an_object():
    with pytest.raises(InvalidRequestError):
        parse_request(CompletionRequest, [1, 2])


def test_chat_validation():
    ok = parse_request(ChatCompletionRequest, {
        "model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}],
        "max_completion_tokens": 5, "slo": "interactive", "priority": -2, "session_id": "s1",
        "unknown_field_from_a_newer_sdk": 1})
    assert ok.requested_max_tokens() == 5 and ok.template_messages()[0]["content"] == "a"
    for bad, param in [({"messages": []}, "messages"),
                       ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
                       ({"messages": "hi"}, "messages"),
                       ({"messages": [{"role": "user", "content": "x"}], "logprobs": True}, "logprobs")]:
        with pytest.raises(InvalidRequestError) as err:
            parse_request(ChatCompletionRequest, {"model": "m", **bad})
        assert err.value.param == param


def test_extensions_parse():
    r = parse_request(CompletionRequest, {**BASE, "priority": 3, "slo": {"ttft_ms": 100},
                                          "session_id": "abc", "ignore_eos": True})
    assert r.priority == 3 and r.slo.ttft_ms == 100 and r.session_id == "abc" and r.ignore_eos
