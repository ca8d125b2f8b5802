"""Request ids: each RPC gets one (the access-log interceptor makes it), so that what a client is
told of a failure ("... (request id 3f2a...)", ErrorInfo.metadata["request_id"]) can be found
in the server's log, which has the full exception under the same id and the access line.

A caller may choose the id (`x-request-id` metadata: 1 to 64 letters, digits and ``._:-``, so
that a proxy's or a client's own id ties its logs to ours); any other value is replaced by a
fresh one rather than refused, as a correlation id must never fail a call. Either way the id is
sent back as `x-request-id` in the response's initial metadata.

The id lives in a context variable: grpc.aio runs each RPC in its own task, and every log line
written while handling it carries the id (bound through jobsched.logs)."""

from __future__ import annotations

import re
import secrets
from typing import Any

import grpc

from jobsched import logs

REQUEST_ID_KEY = "x-request-id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def incoming_request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The caller's x-request-id, if it is one we keep."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str) and _VALID.match(value):
            return value
    return None


def new_request_id(given: str | None = None) -> str:
    """`given`, or a fresh id (16 hex digits: unique enough to find one call in a day of logs),
    now current."""
    request_id = given or secrets.token_hex(8)
    logs.bind(request_id=request_id)
    return request_id


def current_request_id() -> str:
    """The id of the RPC being handled; empty outside one."""
    return logs.bound().get("request_id", "")
