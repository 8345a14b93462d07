"""Every typed error names its admission outcome (the metric label) in one place."""

import pickle

from orchestrator.errors import (DeadlineExceededError, DurabilityUnavailableError,
                                 InternalError, InvalidRequestError, NoHealthyReplicaError,
                                 OverloadedError, QueueTimeoutError, SLOUnattainableError)
from orchestrator.outcomes import Outcome


def test_errors_carry_their_outcome_across_pickling():
    cases = [(OverloadedError("x"), Outcome.REJECTED_OVERLOAD),
             (SLOUnattainableError("x"), Outcome.REJECTED_SLO),
             (DurabilityUnavailableError("x"), Outcome.REJECTED_UNDURABLE),
             (DeadlineExceededError("x"), Outcome.EXPIRED),
             (QueueTimeoutError("x"), Outcome.EXPIRED),
             (NoHealthyReplicaError("x"), Outcome.REJECTED_NO_REPLICA),
             (InvalidRequestError("x"), Outcome.REJECTED_INVALID),
             (InternalError("x"), Outcome.FAILED)]
    for error, outcome in cases:
        assert pickle.loads(pickle.dumps(error)).admission_outcome() is outcome, error
