"""Tool calls the model writes (Hermes format, ``<tool_call>{"name": …, "arguments": …}
</tool_call>``): a turn stops on the id of ``</tool_call>``; the calls of the current
assistant message are parsed with vLLM's ``hermes`` tool parser; the results go back into
the context as the chat template renders tool messages (ChatML ``user`` turn of
``<tool_response>`` blocks), followed by the next assistant turn's header."""

from __future__ import annotations

import json
import logging
from typing import Any

from replicas.tools import ToolCall, ToolResult

logger = logging.getLogger(__name__)

CALL_START, CALL_END = "<tool_call>", "</tool_call>"
TURN_START = "<|im_start|>"


def response_text(results: list[ToolResult]) -> str:
    body = "".join(f"\n<tool_response>\n{r.content}\n</tool_response>" for r in results)
    return f"<|im_end|>\n{TURN_START}user{body}<|im_end|>\n{TURN_START}assistant\n"


class ToolCallParser:
    """Finds the calls of the current assistant message in a token history."""

    def __init__(self, tokenizer: Any, parser_name: str = "hermes") -> None:
        from vllm.tool_parsers import ToolParserManager
        self._tokenizer = tokenizer
        self._parser = ToolParserManager.get_tool_parser(parser_name)(tokenizer)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in (CALL_START, CALL_END, TURN_START)}
        unknown = getattr(tokenizer, "unk_token_id", None)
        missing = [t for t, i in ids.items() if i is None or i == unknown]
        if missing:
            raise ValueError(f"the tokenizer has no {missing} tokens (Hermes format)")
        self.end_id, self._turn_start_id = int(ids[CALL_END]), int(ids[TURN_START])

    def parse(self, history: list[int], call_id_prefix: str) -> list[ToolCall]:
        start = 0
        for i in range(len(history) - 1, -1, -1):
            if history[i] == self._turn_start_id:
                start = i
                break
        text = self._tokenizer.decode(history[start:], skip_special_tokens=False)
        info = self._parser.extract_tool_calls(text, request=None)
        calls = []
        for n, call in enumerate(info.tool_calls if info.tools_called else []):
            try:
                args = json.loads(call.function.arguments or "{}")
            except ValueError:
                args = {"_unparsed": call.function.arguments}
            if not isinstance(args, dict):
                args = {"_value": args}
            calls.append(ToolCall(call.function.name, args, f"{call_id_prefix}-{n}"))
        return calls
