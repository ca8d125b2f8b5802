"""The scheduler's telemetry: Prometheus metrics (metrics.py, gauges.py, queue_depth.py, labels.py)
and the HTTP server of /metrics, /healthz and /readyz (http.py), off unless --metrics-listen is
given; traces (tracing.py: RPC spans and the submit's stored context; job_spans.py: the spans in
a job's trace), off unless an OTEL_TRACES_EXPORTER is configured. When off, nothing here is
created and the hooks are no-ops."""
