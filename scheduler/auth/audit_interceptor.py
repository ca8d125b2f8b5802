"""The server interceptor that writes the audit log, driven by scheduler/auth/audit_table.py.

It sits between the admission limits and the AuthInterceptor (scheduler/server.py), so it sees
the refusals the AuthInterceptor raises, the principal it made current, and every domain error
a servicer raises, before the ErrorInterceptor outside turns them into a status. For each call:

* an ALWAYS method (a mutation) records one event with its outcome, once the servicer is done
  and before the answer goes out: the call is acknowledged only when its event is stored. If
  that write fails, the call fails (UNAVAILABLE) and the event is logged whole instead;
* any method records one event when the call is refused UNAUTHENTICATED or PERMISSION_DENIED
  (a refused call writes nothing else: the AuthInterceptor refuses before the servicer runs).

With authentication off nothing can be refused, so only ALWAYS methods are wrapped: reads,
submits and executor streams then pass through untouched, and with it on they cost one more
wrapper and no statement unless refused.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any

import grpc

from scheduler.api.interceptors import Handler, WrappingInterceptor, grpc_code, wrap_handler
from scheduler.api.request_ids import current_request_id
from scheduler.auth.audit_table import AuditRule, action_of, rule_for
from scheduler.auth.audit_writer import AuditWriter
from scheduler.auth.identity import TENANT_METADATA_KEY, current_principal, tenant_of
from scheduler.auth.permissions import is_public
from scheduler.domain import errors
from scheduler.domain.audit import ANONYMOUS, OK, AuditEvent

log = logging.getLogger("jobsched.audit")

Context = grpc.aio.ServicerContext[Any, Any]
_REFUSED = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


def outcome_of(exc: BaseException, context: Context) -> tuple[str, str]:
    """(code name, ErrorInfo reason) of a call that ended with `exc`."""
    if isinstance(exc, errors.JobschedError):
        return grpc_code(exc).name, exc.reason
    if isinstance(exc, grpc.aio.AbortError):
        code = context.code()
        return (code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"), ""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED", ""
    return "INTERNAL", "INTERNAL"


def _requested_tenant(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_METADATA_KEY:
            return str(value).lower()
    return ""


class _Call:
    """One call being audited."""

    def __init__(
        self, audit: AuditInterceptor, method: str, rule: AuditRule, context: Context, request: Any
    ) -> None:
        self.audit = audit
        self.method = method
        self.rule = rule
        self.context = context
        self.request = request
        # Read now for mutations (grpcio can crash reading it late on a cancelled stream);
        # refusals happen before anything is streamed, so they read it then.
        self.peer = context.peer() if rule.always else ""

    async def failed(self, exc: BaseException) -> None:
        code, reason = outcome_of(exc, self.context)
        if self.rule.always or code in _REFUSED:
            await self._record(code, reason, None, fail_call=False, exc=exc)

    async def succeeded(self, response: Any) -> None:
        if self.rule.always:
            await self._record(OK, "", response, fail_call=True)

    def _who(self, exc: BaseException | None) -> tuple[str, str]:
        principal = current_principal()
        if principal is not None:
            return f"{principal.kind}:{principal.id}", principal.name
        if isinstance(exc, errors.Unauthenticated) and exc.principal:
            return exc.principal, exc.principal_name  # a revoked or expired key: whose it was
        return ANONYMOUS, ""

    def _tenant(self) -> str:
        if self.audit.auth_required and current_principal() is None:
            return _requested_tenant(self.context)  # not authenticated: acts for no tenant
        try:
            return tenant_of(self.context)
        except errors.JobschedError:  # refused or malformed: the tenant it asked for
            return _requested_tenant(self.context)

    async def _record(
        self,
        code: str,
        reason: str,
        response: Any,
        *,
        fail_call: bool,
        exc: BaseException | None = None,
    ) -> None:
        principal, principal_name = self._who(exc)
        try:
            target = self.rule.target(self.request, response)
        except Exception:  # a target is a convenience; never fail a call over it
            target = ""
        event = AuditEvent(
            occurred_at=self.audit.clock(),
            principal=principal,
            principal_name=principal_name,
            tenant=self._tenant(),
            action=action_of(self.method),
            target=target,
            code=code,
            reason=reason,
            peer=self.peer or self.context.peer(),
            request_id=current_request_id(),
        )
        try:
            await self.audit.writer.record(event)
        except Exception as exc:  # the store's error (or a bug): the event goes to the log
            fields = {k: str(v) for k, v in asdict(event).items()}
            log.error(
                "audit event not recorded",
                extra={"fields": {"event": "audit.unrecorded", "error": str(exc), **fields}},
            )
            if fail_call:
                raise


class _Refusals:
    """For client-streaming methods (no request to read a target from): refusals only."""

    def __init__(self, call: _Call) -> None:
        self.call = call

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None:
            await self.call.failed(exc)
        return False


class AuditInterceptor(WrappingInterceptor):
    def __init__(
        self, writer: AuditWriter, clock: Callable[[], datetime], *, auth_required: bool
    ) -> None:
        super().__init__()
        self.writer = writer
        self.clock = clock
        self.auth_required = auth_required

    def wrap(self, method: str, handler: Handler) -> Handler:
        if is_public(method):
            return handler
        rule = rule_for(method)
        if not rule.always and not self.auth_required:
            return handler  # nothing to record: without authentication nothing is refused
        return self._wrap(handler, method, rule)

    def _wrap(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str, rule: AuditRule
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                call = _Call(self, method, rule, context, request)
                try:
                    response = await inner_uu(request, context)
                except BaseException as exc:
                    await call.failed(exc)
                    raise
                await call.succeeded(response)
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream
            # Streams are reads: only their refusals are recorded, and a refusal comes before
            # the first message, so nothing awaits while the generator is being closed.
            refusals = AuditRule(False, rule.target)

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                call = _Call(self, method, refusals, context, request)
                try:
                    result = inner_us(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    else:
                        await result
                except Exception as exc:
                    await call.failed(exc)
                    raise

            return grpc.unary_stream_rpc_method_handler(
                unary_stream, handler.request_deserializer, handler.response_serializer
            )
        refusals = AuditRule(False, rule.target)

        def around(_method: str, context: Context) -> _Refusals:
            return _Refusals(_Call(self, method, refusals, context, None))

        return wrap_handler(handler, method, around)
