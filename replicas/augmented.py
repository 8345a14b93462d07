"""Emulated API calls of augmented requests: the tool result is deterministic filler
(the turns themselves run in :mod:`replicas.turns`)."""

from __future__ import annotations

import zlib

#: Filler tokens come from this id range, present in any vocabulary of ≥ 356 tokens.
FILLER_BASE_ID, FILLER_SPAN = 100, 256


def filler_tokens(request_id: str, turn: int, count: int) -> list[int]:
    """The tool result of one emulated call: deterministic for (request, turn)."""
    seed = zlib.crc32(f"{request_id}:{turn}".encode())
    return [FILLER_BASE_ID + (seed + 31 * j) % FILLER_SPAN for j in range(count)]
