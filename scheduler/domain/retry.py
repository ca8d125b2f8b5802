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


DEFAULT_RETRY_POLICY = RetryPolicy()
MAX_INITIAL_BACKOFF = timedelta(days=1)
MAX_MAX_BACKOFF = timedelta(days=7)
MAX_MULTIPLIER = 10.0


@dataclass(frozen=True, slots=True)
class RetryOverrides:
    """The retry policy fields a job, a job type or a queue sets; None means "not set here". A
    job's policy is, field by field, its own, then its type's, then its queue's, then
    DEFAULT_RETRY_POLICY's (resolved at submit); a maximum below the initial backoff is raised
    to it."""

    initial: timedelta | None = None
    multiplier: float | None = None
    maximum: timedelta | None = None
    jitter: float | None = None

    def problems(self) -> list[tuple[str, str]]:
        """(field, description) for each value out of range (field names as in the proto)."""
        found = []
        if self.initial is not None and not timedelta(0) < self.initial <= MAX_INITIAL_BACKOFF:
            found.append(("initial_backoff", "must be positive and at most 1 day"))
        if self.multiplier is not None and not 1.0 <= self.multiplier <= MAX_MULTIPLIER:
            found.append(("backoff_multiplier", f"must be in [1, {MAX_MULTIPLIER:g}]"))
        if self.maximum is not None and not timedelta(0) < self.maximum <= MAX_MAX_BACKOFF:
            found.append(("max_backoff", "must be positive and at most 7 days"))
        if self.initial is not None and self.maximum is not None and self.maximum < self.initial:
            found.append(("max_backoff", "must not be shorter than initial_backoff"))
        if self.jitter is not None and not 0.0 <= self.jitter <= 1.0:
            found.append(("jitter", "must be in [0, 1]"))
        return found


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
