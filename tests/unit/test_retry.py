"""The retry policy: exponential backoff with a cap and bounded jitter; retry or dead-letter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.domain.retry import RetryPolicy, after_failure
from scheduler.domain.states import Event, JobState

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NO_JITTER = RetryPolicy(
    initial=timedelta(seconds=1), multiplier=2, maximum=timedelta(seconds=30), jitter=0
)


@pytest.mark.parametrize(
    ("attempt", "seconds"), [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (20, 30)]
)
def test_backoff_grows_exponentially_up_to_the_cap(attempt: int, seconds: float) -> None:
    assert NO_JITTER.backoff(attempt) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("rand", "factor"), [(0.0, 0.8), (0.5, 1.0), (0.999999, 1.2)])
def test_jitter_stays_within_its_fraction(rand: float, factor: float) -> None:
    policy = RetryPolicy(initial=timedelta(seconds=10), multiplier=1, jitter=0.2)
    delay = policy.backoff(1, rand=lambda: rand).total_seconds()
    assert delay == pytest.approx(10 * factor, rel=1e-4)


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        NO_JITTER.backoff(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial": timedelta(seconds=-1)},
        {"initial": timedelta(seconds=5), "maximum": timedelta(seconds=1)},
        {"multiplier": 0.5},
        {"jitter": 1.5},
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="need"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_retryable_failure_with_attempts_left_is_scheduled_after_the_backoff() -> None:
    outcome = after_failure(attempt=2, max_attempts=3, retryable=True, now=NOW, policy=NO_JITTER)
    assert outcome.event is Event.FAIL_RETRY
    assert outcome.state is JobState.SCHEDULED
    assert outcome.run_at == NOW + timedelta(seconds=2)


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "retryable"), [(3, 3, True), (1, 3, False), (5, 5, False)]
)
def test_last_attempt_or_non_retryable_error_is_dead(
    attempt: int, max_attempts: int, retryable: bool
) -> None:
    outcome = after_failure(
        attempt=attempt, max_attempts=max_attempts, retryable=retryable, now=NOW, policy=NO_JITTER
    )
    assert outcome.event is Event.FAIL_FINAL
    assert outcome.state is JobState.DEAD
    assert outcome.run_at is None
