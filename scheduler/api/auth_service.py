"""AuthService: create (the secret shown once), list and revoke API keys. The caller manages
only keys whose tenants are all its own; a key for another scope is NOT_FOUND, as if absent."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import grpc

from jobsched.v1 import auth_service_pb2 as pb
from jobsched.v1 import auth_service_pb2_grpc
from scheduler.api.convert import from_duration, timestamp
from scheduler.auth.api_keys import ApiKeyAuthenticator
from scheduler.auth.identity import current_principal
from scheduler.domain.api_key_requests import validate_key_id, validate_key_request
from scheduler.domain.auth import (
    ALL_TENANTS,
    SHOWN_PREFIX_CHARS,
    ApiKeyRecord,
    Principal,
    Role,
    key_digest,
    new_key,
)
from scheduler.domain.errors import ApiKeyNotFound, PermissionDenied
from scheduler.domain.pagination import Cursor, decode_token, encode_token, fingerprint, page_size
from scheduler.store.api_keys import ApiKeyStore, scope_of

Context = grpc.aio.ServicerContext[Any, Any]
# With authentication off every caller may do everything (the scheduler then listens on
# loopback only, or was told --insecure): keys can be prepared before switching it on.
AUTH_OFF = Principal("none", "", "authentication off", Role.ADMIN, frozenset({ALL_TENANTS}))


def api_key_to_proto(key: ApiKeyRecord) -> pb.ApiKey:
    return pb.ApiKey(
        id=key.id,
        name=key.name,
        role=key.role.value,
        tenants=sorted(key.tenants),
        create_time=timestamp(key.created_at),
        expire_time=timestamp(key.expires_at),
        revoke_time=timestamp(key.revoked_at),
        prefix=key.prefix,
    )


def make_key(
    name: str,
    role: Role,
    tenants: frozenset[str],
    now: datetime,
    expires_at: datetime | None = None,
    secret: str | None = None,
) -> tuple[ApiKeyRecord, str]:
    """A new key's record and its secret (a fresh one unless given: bootstrap)."""
    secret = secret or new_key()
    record = ApiKeyRecord(
        id=str(uuid.uuid4()),
        name=name,
        role=role,
        tenants=tenants,
        digest=key_digest(secret),
        prefix=secret[:SHOWN_PREFIX_CHARS],
        created_at=now,
        expires_at=expires_at,
    )
    return record, secret


class AuthService(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        store: ApiKeyStore,
        authenticator: ApiKeyAuthenticator,
        clock: Callable[[], datetime],
        on_revoked: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.clock = clock
        self.on_revoked = on_revoked  # open executor streams of the key end (revocations.py)

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        ttl = from_duration(request.ttl, "ttl") if request.HasField("ttl") else None
        name, role, tenants = validate_key_request(
            request.name, request.role, list(request.tenants), ttl
        )
        caller = current_principal() or AUTH_OFF
        if not caller.covers(tenants):
            raise PermissionDenied(
                "TENANT_NOT_ALLOWED", "a key may only be made for tenants of the caller's own"
            )
        now = self.clock()
        record, secret = make_key(name, role, tenants, now, now + ttl if ttl else None)
        stored = await self.store.create(record)
        return pb.CreateApiKeyResponse(api_key=api_key_to_proto(stored), secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        limit = page_size(request.page_size)
        caller = current_principal() or AUTH_OFF
        scope = scope_of(caller.tenants)
        fp = fingerprint({"scope": scope})
        before = decode_token(request.page_token, fp)
        keys = await self.store.page(scope, before, limit + 1)
        token = ""
        if len(keys) > limit:
            last = keys[limit - 1]
            token = encode_token(Cursor(at=last.created_at, id=last.id), fp)
        return pb.ListApiKeysResponse(
            api_keys=[api_key_to_proto(k) for k in keys[:limit]], next_page_token=token
        )

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        key_id = validate_key_id(request.id)
        caller = current_principal() or AUTH_OFF
        revoked = await self.store.revoke(key_id, scope_of(caller.tenants), self.clock())
        if revoked is None:
            raise ApiKeyNotFound(key_id)
        self.authenticator.forget(key_id)
        self.on_revoked()
        return pb.RevokeApiKeyResponse(api_key=api_key_to_proto(revoked))
