"""Which push exporters OTEL_METRICS_EXPORTER asks for (jobsched/metering.py builds them).
Apart from metering.py, so that a server with metrics off reads one variable and imports no
OpenTelemetry module."""

from __future__ import annotations

import os
from collections.abc import Mapping

EXPORTER_VARIABLE = "OTEL_METRICS_EXPORTER"
# `prometheus`: the pull endpoint, which is --metrics-listen here (accepted, so that a shared
# OTEL_METRICS_EXPORTER=prometheus,otlp works); `none` and empty: no push exporter.
KNOWN_EXPORTERS = frozenset({"otlp", "console", "prometheus", "none"})


def metric_exporters(environ: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The push exporters asked for (`otlp`, `console`); ValueError naming the variable for
    one this program does not know."""
    names = {n.strip().lower() for n in environ.get(EXPORTER_VARIABLE, "").split(",")}
    names.discard("")
    unknown = names - KNOWN_EXPORTERS
    if unknown:
        raise ValueError(
            f"{EXPORTER_VARIABLE}: unknown exporter {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(KNOWN_EXPORTERS))})"
        )
    return frozenset(names - {"prometheus", "none"})


def metrics_pushed(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether metrics are exported without a --metrics-listen (OTLP or console)."""
    return bool(metric_exporters(environ))
