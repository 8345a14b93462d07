"""Reading stored requests written by the previous layout, so that an upgrade with
requests in the durable store loses none of them.

Until 2026-12-07 the stored ``QueuedRequest`` lived in ``orchestrator.queue_policy`` and
held the header's fields (id, model, priority, SLO, session, arrival, prediction) itself;
now it is ``orchestrator.queued.QueuedRequest`` over a shared ``RequestHeader``.  Payloads
of either layout load as the current type."""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

from orchestrator.queued import QueuedRequest
from replicas.types import RequestHeader

_LEGACY = ("orchestrator.queue_policy", "QueuedRequest")
_HEADER_FIELDS = tuple(f.name for f in dataclasses.fields(RequestHeader))
_QUEUE_FIELDS = tuple(f.name for f in dataclasses.fields(QueuedRequest) if f.name != "header")


class _Legacy:
    """Receives a previous-layout payload's state (converted by :func:`loads`)."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _LEGACY:
            return _Legacy
        return super().find_class(module, name)


def loads(payload: bytes) -> Any:
    """``pickle.loads``, with a previous-layout ``QueuedRequest`` upgraded."""
    obj = _Unpickler(io.BytesIO(payload)).load()
    return _upgrade(obj.state) if isinstance(obj, _Legacy) else obj


def _upgrade(state: Any) -> QueuedRequest:
    # a slotted dataclass pickles as (None, {slot: value}) (object.__getstate__)
    values = state[1] if isinstance(state, tuple) else state
    if not isinstance(values, dict):
        raise ValueError(f"unreadable previous-layout QueuedRequest state: {type(state).__name__}")
    header = RequestHeader(**{k: values[k] for k in _HEADER_FIELDS if k in values})
    return QueuedRequest(header, **{k: values[k] for k in _QUEUE_FIELDS if k in values})
