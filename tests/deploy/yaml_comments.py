"""Every key of a deploy file is commented (CONVENTIONS.md item 12): a key line carries a
trailing comment, or the line above it is a comment.  Lines inside block scalars (`|`,
`>-`) are text, not keys."""

from __future__ import annotations

import re

_KEY = re.compile(r"""^(\s*)(?:-\s+)?("[^"]*"|'[^']*'|[^\s#'"{}\[\],][^#{}\[\],]*?):(\s|$)""")
_BLOCK_SCALAR = re.compile(r":\s*[|>][-+]?\s*$")


def _code(line: str) -> tuple[str, bool]:
    """The line without its comment, and whether it had one (a # outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], True
    return line, False


def uncommented_keys(text: str) -> list[str]:
    """``"line N: key"`` for every key line without its comment."""
    missing, previous_comment, block_indent = [], False, None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not stripped or indent > block_indent:
                continue
            block_indent = None
        if not stripped:
            continue
        if stripped.startswith("#"):
            previous_comment = True
            continue
        code, commented = _code(line)
        match = _KEY.match(code)
        if match and not (commented or previous_comment):
            missing.append(f"line {number}: {match.group(2).strip()}")
        if _BLOCK_SCALAR.search(code.rstrip()):
            block_indent = indent
        previous_comment = False
    return missing
