"""Tracing configuration (jobsched/tracing.py): the OTEL_* variables, the options and the config
file with the usual precedence, off by default (nothing built), bad values refused naming the
variable; and the trace-context helpers every process uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace

from executor.flags import parse_args as executor_args
from jobsched.tracing import (
    TracingSettings,
    context_of,
    sampled,
    span_context_of,
    valid_traceparent,
)
from scheduler.flags import parse_args, settings_from

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTEL = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "JOBSCHED_CONFIG",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL:
        monkeypatch.delenv(name, raising=False)


def test_off_by_default_builds_nothing() -> None:
    settings = settings_from(parse_args([])).tracing
    assert settings.exporter == "none"
    assert not settings.enabled
    assert settings.build() is None
    assert TracingSettings.from_env("jobsched-cli", environ={}).build() is None


def test_the_standard_variables_configure_the_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    settings = settings_from(parse_args([])).tracing
    assert (settings.exporter, settings.endpoint) == ("otlp", "http://collector:4317")
    assert (settings.sampler, settings.sampler_arg) == ("parentbased_traceidratio", 0.1)
    assert settings.service_name is None
    assert settings.program == "jobsched-scheduler"


def test_flag_over_environment_over_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "jobsched.toml"
    config.write_text(
        '[executor]\notel_traces_exporter = "console"\notel_service_name = "from-file"\n'
    )
    args = executor_args(["--config", str(config)])
    assert (args.otel_traces_exporter, args.otel_service_name) == ("console", "from-file")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    args = executor_args(["--config", str(config)])
    assert args.otel_service_name == "from-env"
    args = executor_args(["--config", str(config), "--otel-service-name", "from-flag"])
    assert args.otel_service_name == "from-flag"


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "OTEL_TRACES_SAMPLER_ARG"),
        ("OTEL_TRACES_SAMPLER_ARG", "half", "OTEL_TRACES_SAMPLER_ARG"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(variable: str, value: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        TracingSettings.from_env("jobsched-cli", environ={variable: value})


def test_a_bad_value_on_the_command_line_is_an_argparse_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--otel-traces-sampler-arg", "2"])
    assert exit_.value.code == 2
    assert "--otel-traces-sampler-arg" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (TRACEPARENT, True),
        (TRACEPARENT.upper(), False),  # lower-case hex only
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),  # zero trace id
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),  # zero span id
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),  # version ff
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", False),
        ("", False),
    ],
)
def test_valid_traceparent(value: str, valid: bool) -> None:
    assert valid_traceparent(value) is valid
    assert (span_context_of(value) is not None) is valid


def test_a_traceparent_becomes_a_remote_parent() -> None:
    parent = trace.get_current_span(context_of(TRACEPARENT)).get_span_context()
    assert parent.is_valid
    assert parent.is_remote
    assert f"{parent.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert f"{parent.span_id:016x}" == "00f067aa0ba902b7"
    assert parent.trace_flags.sampled
    assert sampled(TRACEPARENT)
    assert not sampled(TRACEPARENT[:-2] + "00")
    assert not trace.get_current_span(context_of("garbage")).get_span_context().is_valid
