"""A circuit breaker with the clock passed in.

closed → (``failure_threshold`` consecutive failures) → open for ``open_s`` (no calls) →
half-open: one probe call; its success closes the circuit, its failure opens it again."""

from __future__ import annotations

from collections.abc import Callable


class CircuitBreaker:
    def __init__(self, failure_threshold: int, open_s: float, clock: Callable[[], float]) -> None:
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self.clock = clock
        self.failures = 0
        self.opened_at_s: float | None = None
        self.probing = False
        self.times_opened = 0

    @property
    def state(self) -> str:
        if self.opened_at_s is None:
            return "closed"
        if self.clock() - self.opened_at_s < self.open_s:
            return "open"
        return "half-open"

    def allow(self) -> bool:
        """May a call go out now?  In half-open state only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self.probing:
            return False
        self.probing = True
        return True

    def release(self) -> None:
        """The probe ended without a verdict (its caller was cancelled): another may go."""
        self.probing = False

    def success(self) -> None:
        self.failures, self.opened_at_s, self.probing = 0, None, False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.failure_threshold:
            if self.opened_at_s is None or self.probing:
                self.times_opened += 1
            self.opened_at_s = self.clock()
            self.probing = False
