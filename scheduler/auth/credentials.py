"""Which credential a call presents, and the principal it resolves to: the one authenticator
the AuthInterceptor asks.

Precedence, when a call could present more than one:

1. An `authorization: Bearer` credential, when the call sends one, decides alone: a token
   starting with `jsk_` is an API key (scheduler/auth/api_keys.py); any other is a JWT when
   JWT is configured (scheduler/auth/jwt.py), else refused as malformed. A bearer credential
   that is refused is never followed by a look at the certificate: a bad token fails the call.
2. Without one, the client certificate's mTLS identity (scheduler/auth/mtls.py), when identity
   rules are configured and the TLS handshake verified a certificate.
3. Neither: UNAUTHENTICATED, CREDENTIAL_MISSING.

So on an mTLS port, where every client has a certificate (often one per machine), a person or a
job can still act as themselves with a key or a token; the certificate then only proves the
connection's end (the transport), not who calls.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from scheduler.auth.api_keys import ApiKeyAuthenticator
from scheduler.auth.identity import requested_tenant
from scheduler.auth.jwks import JwksKeys, JwksSource
from scheduler.auth.jwt import JwtAuthenticator, JwtSettings
from scheduler.auth.mtls import CertificateAuthenticator, MtlsIdentity
from scheduler.domain.auth import KEY_PREFIX, Principal, bearer_token
from scheduler.domain.errors import Unauthenticated

AUTHORIZATION_KEY = "authorization"


class Authenticator(Protocol):
    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal: ...


def authorization_of(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    values = [str(v) for k, v in context.invocation_metadata() or () if k == AUTHORIZATION_KEY]
    if len(values) > 1:
        raise Unauthenticated("CREDENTIAL_MALFORMED", "more than one authorization metadata")
    return values[0] if values else None


class CredentialAuthenticator:
    """API keys always; JWTs and mTLS identities when configured (see the module docstring)."""

    def __init__(
        self,
        api_keys: ApiKeyAuthenticator,
        jwt: JwtAuthenticator | None = None,
        certificates: CertificateAuthenticator | None = None,
    ) -> None:
        self.api_keys = api_keys
        self.jwt = jwt
        self.certificates = certificates

    @classmethod
    def configured(
        cls,
        api_keys: ApiKeyAuthenticator,
        jwt: JwtSettings | None,
        identities: tuple[MtlsIdentity, ...],
    ) -> CredentialAuthenticator:
        """The credentials a scheduler's settings accept."""
        verifier = None
        if jwt is not None:
            keys = JwksKeys(JwksSource(jwt.jwks), jwt.jwks_refresh, jwt.jwks_min_refresh)
            verifier = JwtAuthenticator(jwt, keys)
            keys.on_change = verifier.forget_all
        return cls(api_keys, verifier, CertificateAuthenticator(identities) if identities else None)

    async def start(self) -> None:
        """Read the JWKS (and keep reading it again), when JWT is configured."""
        if self.jwt is not None:
            await self.jwt.keys.start()

    async def stop(self) -> None:
        if self.jwt is not None:
            await self.jwt.keys.stop()

    def verified_recently(self, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        """Whether the call's bearer credential, an API key or a JWT, was verified lately (no
        query, no I/O: a hint for the failed-authentication gate, never a grant)."""
        try:
            token = bearer_token(authorization_of(context))
        except Unauthenticated:
            return False
        if self.jwt is not None and not token.startswith(KEY_PREFIX):
            return self.jwt.verified_recently(token)
        return self.api_keys.verified_recently(token)

    async def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        authorization = authorization_of(context)
        if authorization is None and self.certificates is not None:
            principal = self.certificates.authenticate(context)
            if principal is not None:
                return principal
        token = bearer_token(authorization)
        if self.jwt is None or token.startswith(KEY_PREFIX):
            return await self.api_keys.authenticate(token)
        return await self.jwt.authenticate(token, lambda: requested_tenant(context))
