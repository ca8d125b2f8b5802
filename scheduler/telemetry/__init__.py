"""The scheduler's telemetry: Prometheus metrics (metrics.py, gauges.py, queue_depth.py, labels.py)
and the HTTP server of /metrics, /healthz and /readyz (http.py). Off unless --metrics-listen is
given; when off, nothing here is created and the hooks are no-ops."""
