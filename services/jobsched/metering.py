"""Metrics through the OpenTelemetry metrics API, for the scheduler and the executor alike: one
MeterProvider per server (never the global one), read by

* a Prometheus reader whose collector sits in the server's own CollectorRegistry (not
  prometheus_client's process-global one), so two servers in one process never mix series;
  `exposition()` renders it for GET /metrics (--metrics-listen);
* a periodic OTLP/gRPC exporter when OTEL_METRICS_EXPORTER names `otlp` (endpoint, headers,
  interval from the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT,
  OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, OTEL_METRIC_EXPORT_INTERVAL, ...), or a console
  exporter for `console`.

Counters are `Tally`s: exact counts kept in a dict and reported by an observable counter when a
reader collects. An event costs a dict update instead of the SDK's per-call attribute cleaning
and hashing (bench/instruments.py measured 7 µs per synchronous `add`, several per job).
Histograms are the SDK's synchronous ones (the API has no observable histogram). Gauges are
observable, computed from what the server holds in memory when a reader collects.

The OTLP reader collects on a thread of its own: gauge callbacks read snapshots (`list(...)`)
and never await. Needs the `telemetry` extra (`pip install 'jobsched[telemetry]'`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from opentelemetry.metrics import CallbackOptions, Histogram, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest

from jobsched.metric_exporters import metric_exporters

SHUTDOWN_TIMEOUT_MILLIS = 5000

Labels = tuple[str, ...]
Gauge = Callable[[], Iterable[tuple[float, Mapping[str, str]]]]


class Tally:
    """An exact counter by label values (a tuple in `labels` order), reported cumulatively."""

    __slots__ = ("counts", "labels")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.counts: dict[Labels, float] = {}

    def add(self, values: Labels, amount: float = 1) -> None:
        counts = self.counts
        counts[values] = counts.get(values, 0) + amount

    def value(self, values: Labels) -> float:
        return self.counts.get(values, 0)

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        labels = self.labels
        return [
            Observation(count, dict(zip(labels, values, strict=True)))
            for values, count in list(self.counts.items())
        ]


class Timing:
    """A histogram by label values; the attribute dict of each label tuple is built once."""

    __slots__ = ("_attributes", "_histogram", "labels")

    def __init__(self, histogram: Histogram, labels: Labels) -> None:
        self._histogram = histogram
        self.labels = labels
        self._attributes: dict[Labels, dict[str, str]] = {}

    def record(self, values: Labels, amount: float) -> None:
        attributes = self._attributes.get(values)
        if attributes is None:
            attributes = self._attributes[values] = dict(zip(self.labels, values, strict=True))
        self._histogram.record(amount, attributes)


class Metering:
    """The MeterProvider of one server and its readers; `service` names the meter
    (jobsched.scheduler, jobsched.executor) and, unless OTEL_SERVICE_NAME says otherwise, the
    resource's service.name."""

    def __init__(
        self, service: str, *, prometheus: bool, environ: Mapping[str, str] = os.environ
    ) -> None:
        readers: list[MetricReader] = []
        self.registry = CollectorRegistry(auto_describe=True)
        if prometheus:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader

            # No otel_scope_* labels on every series: one scope per server, named below.
            readers.append(PrometheusMetricReader(registry=self.registry, scope_info_enabled=False))
        exporters = metric_exporters(environ)
        if "otlp" in exporters:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        if "console" in exporters:
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        attributes = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
        self.provider = MeterProvider(metric_readers=readers, resource=Resource.create(attributes))
        self.meter = self.provider.get_meter(f"jobsched.{service.removeprefix('jobsched-')}")
        self._stopped = False

    def counter(self, name: str, description: str, labels: Labels = ()) -> Tally:
        """`name` without `_total` (the Prometheus reader adds it). Without labels it starts
        at 0 (reported before the first event)."""
        tally = Tally(labels)
        if not labels:
            tally.add((), 0)
        self.meter.create_observable_counter(name, [tally.observe], description=description)
        return tally

    def histogram(
        self, name: str, description: str, labels: Labels, buckets: Sequence[float]
    ) -> Timing:
        """Seconds: `name` ends in `_seconds`, the unit is `s`."""
        histogram = self.meter.create_histogram(
            name, unit="s", description=description, explicit_bucket_boundaries_advisory=buckets
        )
        return Timing(histogram, labels)

    def gauge(self, name: str, description: str, read: Gauge) -> None:
        """`read` returns (value, labels) pairs when a reader collects; none: no series."""

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value, dict(labels)) for value, labels in read()]

        self.meter.create_observable_gauge(name, [callback], description=description)

    def exposition(self) -> bytes:
        """The Prometheus text format of the registry (what /metrics serves)."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        """Flush the push exporters (bounded) and take the collector out of the registry.
        Blocking: call it from a thread."""
        if not self._stopped:
            self._stopped = True
            self.provider.shutdown(timeout_millis=SHUTDOWN_TIMEOUT_MILLIS)
