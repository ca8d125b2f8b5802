"""The one server interceptor that authenticates and authorizes every RPC (`--auth required`).

For each call: the method's permission from the table (scheduler/auth/permissions.py; public
methods pass, a method missing from it is refused), the principal its credential resolves to
(an API key, a JWT or a client certificate: scheduler/auth/credentials.py says which wins), the
permission checked against its role;
then the principal is current for the servicer (scheduler/auth/identity.py), which takes its
tenant from it. Errors are domain errors (Unauthenticated, PermissionDenied), mapped with their
ErrorInfo reason by the ErrorInterceptor outside this one; nothing runs before they are raised,
so a refused call writes nothing but its audit event (the AuditInterceptor, just outside)."""

from __future__ import annotations

from typing import Any

import grpc

from scheduler.api.interceptors import Handler, WrappingInterceptor, wrap_handler
from scheduler.auth.credentials import Authenticator
from scheduler.auth.identity import set_principal
from scheduler.auth.permissions import RPC_PERMISSIONS, is_public
from scheduler.domain.auth import Permission
from scheduler.domain.errors import PermissionDenied


class _Authorize:
    def __init__(
        self,
        authenticator: Authenticator,
        permission: Permission | None,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        self.authenticator = authenticator
        self.permission = permission
        self.context = context

    async def __aenter__(self) -> None:
        principal = await self.authenticator.authenticate(self.context)
        # Current before the permission check: a refusal is recorded under who was refused
        # (the audit log, the access log); a refused call runs nothing further.
        set_principal(principal)
        if self.permission is None:  # a method missing from the table: refused, never open
            raise PermissionDenied("PERMISSION_MISSING", "this method is not open to any role")
        principal.require(self.permission)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        return False


class AuthInterceptor(WrappingInterceptor):
    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__()
        self.authenticator = authenticator

    def wrap(self, method: str, handler: Handler) -> Handler:
        if is_public(method):
            return handler
        permission = RPC_PERMISSIONS.get(method)
        authenticator = self.authenticator

        def around(_method: str, context: grpc.aio.ServicerContext[Any, Any]) -> _Authorize:
            return _Authorize(authenticator, permission, context)

        return wrap_handler(handler, method, around)
