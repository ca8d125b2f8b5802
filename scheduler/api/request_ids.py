"""Request ids: each RPC gets one (the access-log interceptor makes it), so that what a client is
told of a failure ("... (request id 3f2a...)", ErrorInfo.metadata["request_id"]) can be found
in the server's log, which has the full exception under the same id and the access line.

The id lives in a context variable: grpc.aio runs each RPC in its own task, and every log line
written while handling it carries the id (bound through jobsched.logs)."""

from __future__ import annotations

import secrets

from jobsched import logs


def new_request_id() -> str:
    """A fresh id (16 hex digits: unique enough to find one call in a day of logs), now current."""
    request_id = secrets.token_hex(8)
    logs.bind(request_id=request_id)
    return request_id


def current_request_id() -> str:
    """The id of the RPC being handled; empty outside one."""
    return logs.bound().get("request_id", "")
