"""ServerSettings: the retention default and its bounds, and max_connection_age with the gRPC
options it turns into."""

from __future__ import annotations

from datetime import timedelta

import pytest

from scheduler.domain.queues import MAX_RETENTION
from scheduler.maintenance.retention import DEFAULT_RETENTION
from scheduler.server import SERVER_OPTIONS, ServerSettings


def test_retention_defaults_to_30_days_and_zero_keeps_forever() -> None:
    assert ServerSettings().retention == DEFAULT_RETENTION == timedelta(days=30)
    assert ServerSettings(retention=timedelta(0)).retention == timedelta(0)
    assert ServerSettings(retention=MAX_RETENTION).retention == MAX_RETENTION


@pytest.mark.parametrize(
    "retention",
    [timedelta(seconds=-1), timedelta(microseconds=-1), MAX_RETENTION + timedelta(seconds=1)],
)
def test_a_negative_or_huge_retention_is_refused(retention: timedelta) -> None:
    with pytest.raises(ValueError, match="retention"):
        ServerSettings(retention=retention)


def test_without_max_connection_age_the_server_options_are_the_base_ones() -> None:
    settings = ServerSettings()
    assert settings.max_connection_age is None
    assert settings.grpc_options == SERVER_OPTIONS
    names = {name for name, _ in settings.grpc_options}
    assert "grpc.max_connection_age_ms" not in names


def test_max_connection_age_sets_the_age_and_a_grace_of_three_heartbeats() -> None:
    settings = ServerSettings(max_connection_age=timedelta(minutes=30), heartbeat_interval=3.0)
    options = dict(settings.grpc_options)
    assert options["grpc.max_connection_age_ms"] == 1_800_000
    assert options["grpc.max_connection_age_grace_ms"] == 9_000
    assert settings.connection_age_grace == timedelta(seconds=9)
    assert set(SERVER_OPTIONS) <= set(settings.grpc_options)  # the base options stay


def test_a_tiny_connection_age_rounds_up_to_a_millisecond() -> None:
    """0 ms would mean something else to gRPC core (or nothing): never send it."""
    options = dict(ServerSettings(max_connection_age=timedelta(microseconds=10)).grpc_options)
    assert options["grpc.max_connection_age_ms"] == 1


@pytest.mark.parametrize("age", [timedelta(0), timedelta(seconds=-5)])
def test_a_zero_or_negative_max_connection_age_is_refused(age: timedelta) -> None:
    with pytest.raises(ValueError, match="max_connection_age"):
        ServerSettings(max_connection_age=age)
