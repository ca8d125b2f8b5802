"""Traces for every jobsched program: configuration from the standard OpenTelemetry environment
variables (and the config file, through the options added here), one TracerProvider per
`Tracing` object, and W3C trace context in gRPC metadata.

    OTEL_TRACES_EXPORTER         none (default) | otlp | console
    OTEL_EXPORTER_OTLP_ENDPOINT  the collector, e.g. http://otel-collector:4317 (OTLP over gRPC)
    OTEL_SERVICE_NAME            jobsched-scheduler, jobsched-executor, jobsched-cli by default
    OTEL_TRACES_SAMPLER          parentbased_always_on (default), parentbased_traceidratio,
                                 traceidratio, always_on, always_off, ...
    OTEL_TRACES_SAMPLER_ARG      the ratio of the *traceidratio samplers, 0..1

Off (the default) builds nothing: `TracingSettings.build()` returns None, and every caller
checks for None before it makes a span, so a program with tracing off creates no span objects
and its RPCs go through no interceptor of ours. The provider is never installed as OpenTelemetry's
global one: several schedulers and executors run in one test process, each with its own.

Trace context crosses processes as the W3C `traceparent` (and `tracestate`) in gRPC metadata,
and as the stored context of a job (scheduler: jobs.trace_context; executor: Assignment). The
clients' spans are in client_spans.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

EXPORTERS = ("none", "otlp", "console")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
TRACEPARENT = "traceparent"
# The environment carrier (a command job's, read by the CLI and OpenTelemetry SDKs that use it).
TRACEPARENT_ENV = "TRACEPARENT"
TRACESTATE = "tracestate"
# version-traceid-spanid-flags, lower-case hex (W3C Trace Context, version 00)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
MAX_TRACESTATE = 512

_propagator = TraceContextTextMapPropagator()

# The options' environment variables, for the configuration loader's `env` of each program.
TRACING_ENV = {
    "otel_traces_exporter": "OTEL_TRACES_EXPORTER",
    "otel_exporter_otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otel_service_name": "OTEL_SERVICE_NAME",
    "otel_traces_sampler": "OTEL_TRACES_SAMPLER",
    "otel_traces_sampler_arg": "OTEL_TRACES_SAMPLER_ARG",
}


def _ratio(value: str) -> float:
    try:
        ratio = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 0 to 1") from None
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 0 to 1")
    return ratio


def add_tracing_options(parser: argparse.ArgumentParser) -> None:
    """The tracing options of a command line (each with its OTEL_* variable, TRACING_ENV)."""
    group = parser.add_argument_group("tracing (off unless --otel-traces-exporter is given)")
    group.add_argument(
        "--otel-traces-exporter",
        choices=EXPORTERS,
        default="none",
        help="where spans go: otlp (OTLP over gRPC to --otel-exporter-otlp-endpoint), console "
        "(stdout) or none (env OTEL_TRACES_EXPORTER; default none: no spans are made)",
    )
    group.add_argument(
        "--otel-exporter-otlp-endpoint",
        default=None,
        help="the OTLP collector, e.g. http://127.0.0.1:4317 (env OTEL_EXPORTER_OTLP_ENDPOINT; "
        "default the exporter's, localhost:4317)",
    )
    group.add_argument(
        "--otel-service-name",
        default=None,
        help="service.name of the spans (env OTEL_SERVICE_NAME; default jobsched-<program>)",
    )
    group.add_argument(
        "--otel-traces-sampler",
        choices=SAMPLERS,
        default="parentbased_always_on",
        help="which traces are recorded (env OTEL_TRACES_SAMPLER; default "
        "parentbased_always_on: every trace a caller did not decide otherwise)",
    )
    group.add_argument(
        "--otel-traces-sampler-arg",
        type=_ratio,
        default=None,
        help="the ratio of the traceidratio samplers, 0..1 (env OTEL_TRACES_SAMPLER_ARG; "
        "default 1)",
    )


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """How a process traces. `exporter` "none" (the default) turns tracing off. `span_exporter`
    (programmatic use: tests, benchmarks) replaces the named exporter."""

    exporter: str = "none"
    endpoint: str | None = None
    service_name: str | None = None  # None: `program`
    # The program's service name when none is configured (jobsched-scheduler, ...).
    program: str = field(default="jobsched", compare=False)
    sampler: str = "parentbased_always_on"
    sampler_arg: float | None = None
    span_exporter: SpanExporter | None = field(default=None, compare=False, repr=False)
    # BatchSpanProcessor's delay between exports (seconds); tests make it short.
    export_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(
                f"OTEL_TRACES_EXPORTER (--otel-traces-exporter) {self.exporter!r} is not one of "
                + ", ".join(EXPORTERS)
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"OTEL_TRACES_SAMPLER (--otel-traces-sampler) {self.sampler!r} is not one of "
                + ", ".join(SAMPLERS)
            )
        if self.sampler_arg is not None and not 0.0 <= self.sampler_arg <= 1.0:
            raise ValueError("OTEL_TRACES_SAMPLER_ARG (--otel-traces-sampler-arg) must be 0..1")

    @property
    def enabled(self) -> bool:
        return self.span_exporter is not None or self.exporter != "none"

    @classmethod
    def from_args(cls, args: argparse.Namespace, default_service: str) -> TracingSettings:
        """From the options of add_tracing_options (already resolved: flag > env > file)."""
        return cls(
            exporter=args.otel_traces_exporter,
            endpoint=args.otel_exporter_otlp_endpoint or None,
            service_name=args.otel_service_name or None,
            program=default_service,
            sampler=args.otel_traces_sampler,
            sampler_arg=args.otel_traces_sampler_arg,
            export_delay=_export_delay(os.environ),
        )

    @classmethod
    def from_env(
        cls, default_service: str, environ: Mapping[str, str] = os.environ
    ) -> TracingSettings:
        """From the OTEL_* variables alone (the CLI's client commands, which have no table);
        ValueError naming the variable for a bad value."""

        def get(name: str) -> str:
            return environ.get(name, "").strip()

        ratio = get("OTEL_TRACES_SAMPLER_ARG")
        try:
            sampler_arg = _ratio(ratio) if ratio else None
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"OTEL_TRACES_SAMPLER_ARG: {exc}") from None
        return cls(
            exporter=get("OTEL_TRACES_EXPORTER").lower() or "none",
            endpoint=get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            service_name=get("OTEL_SERVICE_NAME") or None,
            sampler=get("OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on",
            sampler_arg=sampler_arg,
            program=default_service,
            export_delay=_export_delay(environ),
        )

    def build(self) -> Tracing | None:
        """A Tracing with its own provider, or None when off (nothing is made)."""
        if not self.enabled:
            return None
        return Tracing(self)


def _export_delay(environ: Mapping[str, str]) -> float:
    raw = environ.get("OTEL_BSP_SCHEDULE_DELAY", "").strip()  # milliseconds, as the SDK reads it
    try:
        return max(float(raw) / 1000, 0.01) if raw else 5.0
    except ValueError:
        return 5.0


class Tracing:
    """A process's (or one server's) tracer provider and tracer. `shutdown()` exports what is
    left; call it when the program stops."""

    def __init__(self, settings: TracingSettings) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as exc:  # a client-only install
            raise RuntimeError(
                "tracing needs the OpenTelemetry SDK: pip install 'jobsched[tracing]'"
            ) from exc
        self.settings = settings
        resource = Resource.create({"service.name": settings.service_name or settings.program})
        self.provider: TracerProvider = TracerProvider(
            resource=resource, sampler=_sampler(settings.sampler, settings.sampler_arg)
        )
        exporter = settings.span_exporter or _exporter(settings)
        self.provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=settings.export_delay * 1000)
        )
        self.tracer: trace.Tracer = self.provider.get_tracer("jobsched")

    def shutdown(self) -> None:
        self.provider.shutdown()

    def force_flush(self) -> None:
        self.provider.force_flush()


def _sampler(name: str, arg: float | None) -> Any:
    from opentelemetry.sdk.trace import sampling

    ratio = 1.0 if arg is None else arg
    if name == "always_on":
        return sampling.ALWAYS_ON
    if name == "always_off":
        return sampling.ALWAYS_OFF
    if name == "traceidratio":
        return sampling.TraceIdRatioBased(ratio)
    if name == "parentbased_always_off":
        return sampling.ParentBased(sampling.ALWAYS_OFF)
    if name == "parentbased_traceidratio":
        return sampling.ParentBased(sampling.TraceIdRatioBased(ratio))
    return sampling.ParentBased(sampling.ALWAYS_ON)


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise RuntimeError(
            "the otlp traces exporter needs opentelemetry-exporter-otlp-proto-grpc: "
            "pip install 'jobsched[tracing]'"
        ) from exc
    endpoint = settings.endpoint
    insecure = None
    if endpoint is not None and endpoint.startswith("http://"):
        insecure = True
    return OTLPSpanExporter(endpoint=endpoint, insecure=insecure)


# --- trace context as text -------------------------------------------------------------------


def valid_traceparent(value: str) -> bool:
    """Whether `value` is a W3C traceparent with a non-zero trace id and span id."""
    if len(value) != 55 or not _TRACEPARENT.match(value) or value.startswith("ff"):
        return False
    _version, trace_id, span_id, _flags = value.split("-")
    return trace_id != "0" * 32 and span_id != "0" * 16


def traceparent_of(span_context: trace.SpanContext) -> str:
    """The traceparent of a span context (which must be valid)."""
    flags = int(span_context.trace_flags) & 0xFF
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"


def current_traceparent() -> str | None:
    """The traceparent of the current span, None when there is none (no span objects made)."""
    span_context = trace.get_current_span().get_span_context()
    return traceparent_of(span_context) if span_context.is_valid else None


def span_context_of(traceparent: str | None) -> trace.SpanContext | None:
    """The remote span context of a valid traceparent, None otherwise (parsed by hand: the
    propagator's extract took several times as long, and this runs per job)."""
    if not traceparent or not valid_traceparent(traceparent):
        return None
    return trace.SpanContext(
        trace_id=int(traceparent[3:35], 16),
        span_id=int(traceparent[36:52], 16),
        is_remote=True,
        trace_flags=trace.TraceFlags(int(traceparent[53:55], 16)),
    )


def sampled(traceparent: str | None) -> bool:
    """Whether a traceparent's sampled flag is set (a valid one's: see valid_traceparent)."""
    if not traceparent:
        return False
    return int(traceparent[-2:], 16) & 1 == 1


def follows_parent(tracer: trace.Tracer) -> bool:
    """Whether the tracer's sampler is parent-based: an unsampled parent then means no span."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    return isinstance(getattr(tracer, "sampler", None), ParentBased)


def context_of(traceparent: str | None, tracestate: str | None = None) -> otel_context.Context:
    """An OpenTelemetry context whose parent is the given traceparent (a fresh, empty context
    for None or an invalid one)."""
    if tracestate:
        carrier = {TRACEPARENT: traceparent or "", TRACESTATE: tracestate}
        return _propagator.extract(carrier, context=otel_context.Context())
    span_context = span_context_of(traceparent)
    if span_context is None:
        return otel_context.Context()
    return trace.set_span_in_context(trace.NonRecordingSpan(span_context), otel_context.Context())


def trace_fields() -> dict[str, str]:
    """trace_id and span_id of the current span for a log line; empty when there is none."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}


def with_trace_metadata(
    metadata: Sequence[tuple[str, str]] | None, span_context: trace.SpanContext | None = None
) -> tuple[tuple[str, str], ...]:
    """`metadata` with the traceparent of `span_context` (default: the current span's) in place
    of any it had; unchanged when there is no valid context."""
    if span_context is None:
        span_context = trace.get_current_span().get_span_context()
    pairs = tuple(metadata or ())
    if not span_context.is_valid:
        return pairs
    kept = tuple((k, v) for k, v in pairs if k not in (TRACEPARENT, TRACESTATE))
    extra: tuple[tuple[str, str], ...] = ((TRACEPARENT, traceparent_of(span_context)),)
    state = span_context.trace_state.to_header() if span_context.trace_state else ""
    if state:
        extra += ((TRACESTATE, state),)
    return kept + extra


@contextlib.contextmanager
def background_span(
    tracer: trace.Tracer | None, name: str, **attributes: Any
) -> Iterator[trace.Span | None]:
    """A root span for background work (a claim batch, a leader duty), current inside; yields
    None and makes nothing when `tracer` is None. Set row counts on it as attributes."""
    if tracer is None:
        yield None
        return
    with tracer.start_as_current_span(
        name, context=otel_context.Context(), attributes=attributes
    ) as span:
        yield span
