"""The principal of the RPC being handled, set by the AuthInterceptor, and the tenant a call
acts for. A context variable, like the request id: grpc.aio runs each RPC in its own task, and
tasks a servicer starts (ExecutorService's reader) inherit it. Servicers never parse
credentials; they call `tenant_of(context)` and, where it matters, `current_principal()`."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import grpc

from scheduler.domain.auth import DEFAULT_TENANT, Principal
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.validation import NAME_PATTERN

TENANT_METADATA_KEY = "x-jobsched-tenant"

_principal: ContextVar[Principal | None] = ContextVar("jobsched_principal", default=None)


def current_principal() -> Principal | None:
    """Who makes the current call; None when authentication is off."""
    return _principal.get()


def set_principal(principal: Principal) -> None:
    _principal.set(principal)


def requested_tenant(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The tenant named by the x-jobsched-tenant metadata (normalised), None without one."""
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA_KEY:
            tenant = str(value).lower()
            if not NAME_PATTERN.fullmatch(tenant):
                raise InvalidArgument(
                    [FieldViolation(TENANT_METADATA_KEY, f"must match {NAME_PATTERN.pattern}")]
                )
            return tenant
    return None


def tenant_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The tenant the call acts for. Authentication off: the one the metadata names, else
    "default". On: the principal's, selected by the metadata among its tenants
    (PERMISSION_DENIED for one it may not act for)."""
    requested = requested_tenant(context)
    principal = current_principal()
    if principal is None:
        return requested or DEFAULT_TENANT
    return principal.tenant_for(requested)
