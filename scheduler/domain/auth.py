"""Who a caller is and what it may do: roles, permissions, principals, API key format. Pure.

A `Principal` is what any credential resolves to (an API key today; a JWT or a client
certificate can produce the same): a kind and id, a role, and the tenants it may act for. The
RPC -> permission table is scheduler/auth/permissions.py; the interceptor that enforces it is
scheduler/auth/interceptor.py.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from scheduler.domain.errors import PermissionDenied, Unauthenticated

# A principal bound to this "tenant" acts for every tenant (the bootstrap admin key).
ALL_TENANTS = "*"
DEFAULT_TENANT = "default"
KEY_PREFIX = "jsk_"
# token_urlsafe(32): 256 bits of randomness as 43 URL-safe base64 characters.
_KEY_BYTES = 32
KEY_PATTERN = re.compile(r"^jsk_[A-Za-z0-9_-]{43}$")
# What lists show of a key to tell them apart: "jsk_" and 6 characters (36 bits: no help to a
# guesser of the other 222).
SHOWN_PREFIX_CHARS = len(KEY_PREFIX) + 6


class Permission(enum.StrEnum):
    READ = "jobs.read"  # status, lists, history, watch, logs; queue, schedule and type reads
    SUBMIT = "jobs.submit"
    OPERATE = "jobs.operate"  # cancel, retry, delete, priority
    MANAGE_QUEUES = "queues.manage"
    MANAGE_SCHEDULES = "schedules.manage"
    MANAGE_JOB_TYPES = "job_types.manage"
    MANAGE_KEYS = "keys.manage"
    READ_CLUSTER = "cluster.read"
    READ_AUDIT = "audit.read"  # AuditService.ListAuditEvents
    EXECUTE = "executor.connect"  # ExecutorService.Connect and ArtifactService.UploadArtifact


class Role(enum.StrEnum):
    VIEWER = "viewer"
    SUBMITTER = "submitter"
    OPERATOR = "operator"
    ADMIN = "admin"
    EXECUTOR = "executor"


_VIEWER = frozenset({Permission.READ})
_SUBMITTER = _VIEWER | {Permission.SUBMIT}
_OPERATOR = _SUBMITTER | {
    Permission.OPERATE,
    Permission.MANAGE_QUEUES,
    Permission.MANAGE_SCHEDULES,
    Permission.MANAGE_JOB_TYPES,
}
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.SUBMITTER: _SUBMITTER,
    Role.OPERATOR: _OPERATOR,
    Role.ADMIN: _OPERATOR
    | {Permission.MANAGE_KEYS, Permission.READ_CLUSTER, Permission.READ_AUDIT},
    # Executors run jobs; they read nothing else (not even the jobs of their own tenants).
    Role.EXECUTOR: frozenset({Permission.EXECUTE}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. `tenants` holds ALL_TENANTS for one acting for every tenant."""

    kind: str  # "api_key", "jwt", "certificate"
    id: str
    name: str
    role: Role
    tenants: frozenset[str]
    # When the credential stops being valid by itself, if it says (a JWT's exp, a client
    # certificate's notAfter): an executor's stream opened with it is ended then
    # (scheduler/auth/revocations.py).
    expires_at: datetime | None = None

    @property
    def all_tenants(self) -> bool:
        return ALL_TENANTS in self.tenants

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def require(self, permission: Permission) -> None:
        if not self.may(permission):
            raise PermissionDenied(
                "PERMISSION_MISSING",
                f"the {self.role.value} role does not have the {permission.value} permission",
            )

    def tenant_for(self, requested: str | None) -> str:
        """The tenant a call acts for: the one requested (x-jobsched-tenant) if the principal
        may act for it; without a request, its only tenant (or "default" for one acting for
        every tenant or including "default")."""
        if requested is not None:
            if self.all_tenants or requested in self.tenants:
                return requested
            raise PermissionDenied(
                "TENANT_NOT_ALLOWED", f"the credential may not act for tenant {requested!r}"
            )
        if self.all_tenants or DEFAULT_TENANT in self.tenants:
            return DEFAULT_TENANT
        if len(self.tenants) == 1:
            return next(iter(self.tenants))
        raise PermissionDenied(
            "TENANT_NOT_SELECTED",
            "the credential acts for several tenants: choose one with x-jobsched-tenant",
        )

    @property
    def tenant_filter(self) -> tuple[str, ...] | None:
        """The tenants whose jobs it may run, sorted; None: every tenant."""
        return None if self.all_tenants else tuple(sorted(self.tenants))

    def covers(self, tenants: frozenset[str]) -> bool:
        """May it manage something bound to `tenants` (a key it creates, lists or revokes)?"""
        return self.all_tenants or (ALL_TENANTS not in tenants and tenants <= self.tenants)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key: never its secret, only its SHA-256 digest."""

    id: str
    name: str
    role: Role
    tenants: frozenset[str]
    digest: bytes
    prefix: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def principal(self) -> Principal:
        return Principal("api_key", self.id, self.name, self.role, self.tenants)

    def check_usable(self, now: datetime) -> None:
        whose = {"principal": f"api_key:{self.id}", "name": self.name}
        if self.revoked_at is not None:
            raise Unauthenticated("CREDENTIAL_REVOKED", "the API key was revoked", **whose)
        if self.expires_at is not None and self.expires_at <= now:
            raise Unauthenticated("CREDENTIAL_EXPIRED", "the API key has expired", **whose)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)


def key_digest(key: str) -> bytes:
    """SHA-256 of the key. A fast unsalted hash is enough here, unlike for passwords: a key is
    256 random bits, so a stolen digest cannot be reversed by guessing (there is no dictionary
    to try), and a fast hash keeps verification cheap. The digest is also the lookup key."""
    return hashlib.sha256(key.encode()).digest()


def same_digest(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def check_key_format(key: str) -> None:
    if not KEY_PATTERN.fullmatch(key):
        raise Unauthenticated(
            "CREDENTIAL_MALFORMED", "the bearer token is not a jobsched API key (jsk_...)"
        )


def bearer_token(authorization: str | None) -> str:
    """The token of an `authorization: Bearer <token>` value."""
    if authorization is None:
        raise Unauthenticated(
            "CREDENTIAL_MISSING", "a credential is required: send authorization: Bearer <key>"
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "CREDENTIAL_MALFORMED", "the authorization metadata must be 'Bearer <key>'"
        )
    return token.strip()
