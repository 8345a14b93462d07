"""The replica's scheduler calls: typed at both ends, malformed ones named."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from replicas.policy import ReplicaProfile
from replicas.policy.profile import StepRecord
from replicas.scheduler_ops import (Configure, GetState, SchedulerOpError, SchedulerState,
                                    TakeSteps, op_from_wire, steps_from_wire, steps_to_wire)

PROFILE = ReplicaProfile(0.05, 10.0, 256, 512, source="profiled")


@pytest.mark.parametrize("op", [Configure("lamps", PROFILE), GetState(), TakeSteps(),
                                Configure("fcfs", PROFILE, rerank_every_steps=1,
                                          starvation_threshold_steps=None, live_profile=False)])
def test_every_op_survives_its_wire_form(op) -> None:
    assert op_from_wire(op.to_wire()) == op


def test_state_and_steps_survive_their_wire_form() -> None:
    state = SchedulerState("lamps", 0.5, 10, 20, 1, 2, 0, 1, 8, 64, 300, 3, 99, 0.2, 0.9,
                           PROFILE, 50, ("a", "b"))
    assert SchedulerState.from_wire(state.to_wire()) == state
    steps = [StepRecord(8, 2, 4, 100, 3.5), StepRecord(1, 1, 0, 20, 1.0)]
    assert steps_from_wire(steps_to_wire(steps)) == steps


@pytest.mark.parametrize(("payload", "message"), [
    ({"op": "nope"}, "unknown scheduler utility op 'nope'"),
    ({}, "unknown scheduler utility op None"),
    (["state"], "must be a dict"),
    ({"op": "configure"}, "bad configure call"),
    ({"op": "configure", "policy": "lamps", "profile": {"a_ms_per_token": 1}}, "bad configure call"),
    ({"op": "configure", "policy": "lamps", "profile": PROFILE.to_json(),
      "rerank_every_steps": "often"}, "bad configure call"),
])
def test_a_malformed_call_is_named(payload, message) -> None:
    with pytest.raises(SchedulerOpError, match=message):
        op_from_wire(payload)


@settings(deadline=None)  # the machine may be busy: no per-example deadline
@given(st.dictionaries(st.sampled_from(["op", "policy", "profile", "rerank_every_steps"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=8),
                                 st.sampled_from(["configure", "state", "steps"]))))
def test_any_payload_is_an_op_or_a_named_error(payload) -> None:
    try:
        op = op_from_wire(payload)
    except SchedulerOpError:
        return
    assert isinstance(op, (Configure, GetState, TakeSteps))
