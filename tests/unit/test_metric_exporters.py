"""OTEL_METRICS_EXPORTER as jobsched reads it (jobsched/metric_exporters.py), the scheduler and
executor options that turn metrics on, and the MeterProvider per server (jobsched/metering.py):
two servers in one process never see each other's series, and neither touches
prometheus_client's process-global registry."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from executor.flags import parse_args as executor_args
from jobsched.metering import Metering
from jobsched.metric_exporters import metric_exporters, metrics_pushed
from scheduler.flags import parse_args, settings_from
from tests.metrics_scrape import parse, value


@pytest.mark.parametrize(
    ("setting", "exporters"),
    [
        ("", set()),
        ("none", set()),
        ("prometheus", set()),  # the pull endpoint is --metrics-listen
        ("otlp", {"otlp"}),
        (" OTLP , console ", {"otlp", "console"}),
        ("prometheus,otlp", {"otlp"}),
    ],
)
def test_the_exporters_asked_for(setting: str, exporters: set[str]) -> None:
    assert metric_exporters({"OTEL_METRICS_EXPORTER": setting}) == exporters
    assert metrics_pushed({"OTEL_METRICS_EXPORTER": setting}) == bool(exporters)


def test_an_unknown_exporter_is_refused_naming_the_variable() -> None:
    with pytest.raises(ValueError, match=r"^OTEL_METRICS_EXPORTER: unknown exporter zipkin"):
        metric_exporters({"OTEL_METRICS_EXPORTER": "otlp,zipkin"})


def test_the_scheduler_refuses_an_unknown_exporter_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "statsd")
    with pytest.raises(ValueError, match="OTEL_METRICS_EXPORTER"):
        settings_from(parse_args([]))


def test_the_executor_metrics_listen_option_is_checked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert executor_args([]).metrics_listen is None
    assert executor_args(["--metrics-listen", "0.0.0.0:9464"]).metrics_listen == "0.0.0.0:9464"
    with pytest.raises(SystemExit):
        executor_args(["--metrics-listen", "9464"])
    assert "'9464' is not HOST:PORT" in capsys.readouterr().err


def test_two_servers_in_one_process_keep_their_own_series() -> None:
    global_names = set(REGISTRY._names_to_collectors)
    first = Metering("jobsched-scheduler", prometheus=True, environ={})
    second = Metering("jobsched-scheduler", prometheus=True, environ={})
    try:
        a = first.counter("jobsched_jobs_submitted", "test", ("queue",))
        b = second.counter("jobsched_jobs_submitted", "test", ("queue",))
        a.add(("q",), 2)
        b.add(("q",), 5)
        first.gauge("jobsched_leader", "test", lambda: [(1, {})])
        assert (
            value(parse(first.exposition().decode()), "jobsched_jobs_submitted_total", queue="q")
            == 2
        )
        assert (
            value(parse(second.exposition().decode()), "jobsched_jobs_submitted_total", queue="q")
            == 5
        )
        assert value(parse(second.exposition().decode()), "jobsched_leader") is None
        assert set(REGISTRY._names_to_collectors) == global_names
    finally:
        first.shutdown()
        second.shutdown()
    # Shut down, a server's collector leaves its registry.
    assert parse(first.exposition().decode()) == {}


def test_a_counter_without_labels_reports_zero_before_its_first_event() -> None:
    metering = Metering("jobsched-executor", prometheus=True, environ={})
    try:
        metering.counter("jobsched_executor_reconnects", "test")
        samples = parse(metering.exposition().decode())
        assert value(samples, "jobsched_executor_reconnects_total") == 0
    finally:
        metering.shutdown()
