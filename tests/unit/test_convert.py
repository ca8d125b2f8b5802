"""The hand-rolled datetime -> Timestamp and timedelta -> Duration conversions agree with
protobuf's own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from scheduler.api.convert import duration, timestamp


@pytest.mark.parametrize(
    "value",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 12, 2, 13, 25, 55, 123456, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),  # before the epoch
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
        datetime(2026, 3, 1, 8, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
        datetime(2026, 3, 1, 8, 0, 0, 1),  # naive: UTC, as FromDatetime reads it
    ],
)
def test_timestamp_matches_from_datetime(value: datetime) -> None:
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected


def test_none_stays_none() -> None:
    assert timestamp(None) is None


@pytest.mark.parametrize(
    "value",
    [
        timedelta(0),
        timedelta(minutes=5),
        timedelta(days=400, seconds=3, microseconds=7),
        timedelta(microseconds=-1),  # negative: seconds and nanos share the sign
        timedelta(days=-1, seconds=5),
    ],
)
def test_duration_matches_from_timedelta(value: timedelta) -> None:
    expected = Duration()
    expected.FromTimedelta(value)
    assert duration(value) == expected
