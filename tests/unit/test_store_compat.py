"""Stored requests of the previous layout (``orchestrator.queue_policy.QueuedRequest`` with
the header's fields inline) load as today's ``QueuedRequest``: an upgrade loses none."""

from __future__ import annotations

import math
import pickle
import sys
import types
from dataclasses import dataclass

import pytest

from orchestrator import store_compat
from orchestrator.queued import QueuedRequest
from predictor_service.types import Prediction
from replicas.types import RequestHeader, SLOSpec


def _previous_layout_payload(**values) -> bytes:
    """A payload pickled by the previous layout's class (its fields, its module path)."""
    module = types.ModuleType("orchestrator.queue_policy")

    @dataclass(eq=False, slots=True)
    class QueuedRequest:  # the previous definition's fields, in its order
        request_id: str
        model: str
        num_prompt_tokens: int
        max_tokens: int
        priority: int = 0
        slo: SLOSpec | None = None
        session_id: str | None = None
        prediction: Prediction | None = None
        arrival_s: float | None = None
        num_turns: int = 1
        api_time_s: float = 0.0
        enqueued_s: float = 0.0
        seq: int = 0
        deadline_s: float = math.inf
        predicted_tokens: float = 0.0
        predicted_var_tokens: float = 0.0
        best_effort: bool = False
        late: bool = False
        evicted: bool = False
        avoid_replica: str | None = None
        est_wait_s: float | None = None
        recovered_deployment: str = ""
        recovered_gpu_class: str = ""

    QueuedRequest.__module__ = module.__name__
    QueuedRequest.__qualname__ = "QueuedRequest"
    module.QueuedRequest = QueuedRequest  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        return pickle.dumps(QueuedRequest(**values), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        del sys.modules[module.__name__]


def test_a_previous_layout_request_loads_with_every_field() -> None:
    slo, pred = SLOSpec("interactive", 2000, 20000), Prediction(10.0, 10.0, 18.0)
    payload = _previous_layout_payload(
        request_id="r1", model="m", num_prompt_tokens=12, max_tokens=64, priority=2, slo=slo,
        session_id="s", prediction=pred, arrival_s=1000.5, num_turns=3, api_time_s=4.0,
        enqueued_s=1001.0, seq=7, deadline_s=1002.5, predicted_tokens=30.0,
        predicted_var_tokens=9.0, best_effort=True, evicted=True, avoid_replica="x",
        est_wait_s=0.25, recovered_deployment="d", recovered_gpu_class="g")
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(payload)  # what recovery met before: the record was deleted as corrupt
    r = store_compat.loads(payload)
    assert isinstance(r, QueuedRequest)
    assert r.header == RequestHeader("r1", "m", 2, slo, "s", 1000.5, pred)
    assert (r.num_prompt_tokens, r.max_tokens, r.num_turns, r.api_time_s) == (12, 64, 3, 4.0)
    assert (r.enqueued_s, r.seq, r.deadline_s) == (1001.0, 7, 1002.5)
    assert (r.predicted_tokens, r.predicted_var_tokens, r.best_effort, r.evicted) == (
        30.0, 9.0, True, True)
    assert (r.avoid_replica, r.est_wait_s, r.recovered_deployment, r.recovered_gpu_class) == (
        "x", 0.25, "d", "g")
    assert r.queue_entry == 0  # not queued until the recovered queue pushes it


def test_the_current_layout_round_trips_unchanged() -> None:
    r = QueuedRequest(RequestHeader("r2", "m", arrival_s=5.0), num_prompt_tokens=1, max_tokens=2,
                      seq=3)
    back = store_compat.loads(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL))
    assert back.header == r.header and back.seq == 3
