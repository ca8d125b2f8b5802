"""What happens after a failed attempt: retry later (with exponential backoff) or dead-letter.

Pure: the random source for jitter is passed in, so tests choose it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from scheduler.domain.states import Event, JobState


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff before attempt n+1 = min(initial * multiplier**(n-1), maximum), +/- jitter."""

    initial: timedelta = timedelta(seconds=1)
    multiplier: float = 2.0
    maximum: timedelta = timedelta(minutes=10)
    jitter: float = 0.1  # fraction of the delay, applied symmetrically

    def __post_init__(self) -> None:
        if self.initial < timedelta(0) or self.maximum < self.initial:
            raise ValueError("need 0 <= initial <= maximum")
        if self.multiplier < 1.0 or not 0.0 <= self.jitter <= 1.0:
            raise ValueError("need multiplier >= 1 and 0 <= jitter <= 1")

    def backoff(self, attempt: int, rand: Callable[[], float] = random.random) -> timedelta:
        """Delay after failed attempt number `attempt` (1-based). `rand` returns [0, 1)."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        base = self.initial.total_seconds() * self.multiplier ** (attempt - 1)
        capped = min(base, self.maximum.total_seconds())
        spread = capped * self.jitter * (2 * rand() - 1)
        return timedelta(seconds=max(0.0, capped + spread))


@dataclass(frozen=True, slots=True)
class FailureOutcome:
    event: Event
    state: JobState
    run_at: datetime | None  # when the next attempt may start; None when dead


def after_failure(
    *,
    attempt: int,
    max_attempts: int,
    retryable: bool,
    now: datetime,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> FailureOutcome:
    """Decide the fate of a job whose attempt `attempt` just failed."""
    if retryable and attempt < max_attempts:
        return FailureOutcome(
            Event.FAIL_RETRY, JobState.SCHEDULED, now + policy.backoff(attempt, rand)
        )
    return FailureOutcome(Event.FAIL_FINAL, JobState.DEAD, None)
