"""Bounded label values: a metric's label never takes more than `limit` distinct values.

Queue names and job types come from clients. The first `limit` distinct values seen are kept
as they are, for the life of the process; any value after that is reported as `other`, so a
client submitting to ten thousand queues adds one series, not ten thousand. Job ids and other
unbounded values are never labels at all."""

from __future__ import annotations

OTHER = "other"
# Per label (queue, type): well above what a deployment names, far below what hurts Prometheus.
DEFAULT_MAX_VALUES = 100


class BoundedValues:
    """The label value to report for a raw value: itself while fewer than `limit` distinct
    values have been seen (or it is one of them), `other` after that."""

    def __init__(self, limit: int = DEFAULT_MAX_VALUES) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self.limit:
            self._seen.add(value)
            return value
        return OTHER
