"""Job-type settings and setting sources: the pure parts (update masks, bounds, the stored
form of where each setting came from)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.domain.errors import InvalidArgument
from scheduler.domain.job_types import JobTypeSettings, apply_update, check_type_name
from scheduler.domain.retry import RetryOverrides
from scheduler.domain.setting_sources import SETTINGS, Source, decode, encode

FULL = JobTypeSettings(
    name="resize",
    max_attempts=5,
    timeout=timedelta(minutes=5),
    retry=RetryOverrides(initial=timedelta(seconds=10), jitter=0.0),
)


def fields(err: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in err.value.violations]


def test_a_mask_takes_its_paths_and_clears_unset_ones() -> None:
    given = JobTypeSettings(name="resize", retry=RetryOverrides(maximum=timedelta(minutes=1)))
    updated = apply_update(FULL, given, ["timeout", "retry_policy.max_backoff"])
    assert updated.timeout is None
    assert updated.max_attempts == 5
    assert updated.retry == RetryOverrides(
        initial=timedelta(seconds=10), maximum=timedelta(minutes=1), jitter=0.0
    )
    assert apply_update(FULL, given, ["retry_policy"]).retry == given.retry
    emptied = apply_update(FULL, given, ["max_attempts", "timeout", "retry_policy.initial_backoff"])
    assert not emptied.empty  # jitter is still set
    assert apply_update(emptied, given, ["retry_policy"]).retry == given.retry
    assert apply_update(
        FULL, JobTypeSettings(name="x"), ["max_attempts", "timeout", "retry_policy"]
    ).empty


@pytest.mark.parametrize(
    ("given", "field"),
    [
        (JobTypeSettings(name="x", max_attempts=0), "job_type.max_attempts"),
        (JobTypeSettings(name="x", max_attempts=101), "job_type.max_attempts"),
        (JobTypeSettings(name="x", timeout=timedelta(0)), "job_type.timeout"),
        (JobTypeSettings(name="x", timeout=timedelta(days=7, seconds=1)), "job_type.timeout"),
        (
            JobTypeSettings(name="x", retry=RetryOverrides(jitter=1.5)),
            "job_type.retry_policy.jitter",
        ),
    ],
)
def test_values_out_of_range_name_the_field(given: JobTypeSettings, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        apply_update(JobTypeSettings(name="x"), given, ["max_attempts", "timeout", "retry_policy"])
    assert fields(err) == [field]


def test_bounds_are_inclusive() -> None:
    edge = JobTypeSettings(name="x", max_attempts=100, timeout=timedelta(days=7))
    assert apply_update(JobTypeSettings(name="x"), edge, ["max_attempts", "timeout"]) == edge


def test_unknown_paths_and_bad_names_are_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        apply_update(FULL, FULL, ["timeout", "default_timeout"])
    assert fields(err) == ["update_mask.paths[1]"]
    assert check_type_name("Resize.V2", "name") == "resize.v2"
    for bad in ("", "9x", "a b", "x" * 65):
        with pytest.raises(InvalidArgument) as err:
            check_type_name(bad, "job_type.name")
        assert fields(err) == ["job_type.name"]


def test_sources_round_trip_in_settings_order() -> None:
    assert decode(None) == ()
    stored = encode(
        {
            "max_attempts": Source.JOB,
            "timeout": Source.TYPE,
            "retry_policy.initial_backoff": Source.QUEUE,
            "retry_policy.backoff_multiplier": Source.DEFAULT,
            "retry_policy.max_backoff": Source.TYPE,
            "retry_policy.jitter": Source.JOB,
        }
    )
    assert stored == "jtqdtj"
    assert [name for name, _ in decode(stored)] == list(SETTINGS)
    assert dict(decode(stored))["retry_policy.initial_backoff"] is Source.QUEUE
    with pytest.raises(ValueError, match="expected 6"):
        decode("jt")
