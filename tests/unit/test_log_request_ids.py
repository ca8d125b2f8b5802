"""Log lines written while an RPC is handled carry its request id, whoever writes them."""

from __future__ import annotations

import contextvars
import json
import logging

from jobsched.logs import JsonFormatter
from scheduler.api.request_ids import current_request_id, new_request_id


def _line(message: str) -> dict[str, object]:
    record = logging.LogRecord("jobsched.store", logging.WARNING, __file__, 1, message, (), None)
    body: dict[str, object] = json.loads(JsonFormatter().format(record))
    return body


def test_a_line_inside_an_rpc_has_its_request_id_and_one_outside_has_none() -> None:
    def inside() -> tuple[str, dict[str, object]]:
        request_id = new_request_id()
        return request_id, _line("the job store refused a value")

    request_id, body = contextvars.copy_context().run(inside)
    assert body["request_id"] == request_id
    assert current_request_id() == ""
    assert "request_id" not in _line("outside")
