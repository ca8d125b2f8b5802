"""Statements on API keys (AuthService, the authenticator, bootstrap), one named function each,
and the ApiKeyStore facade. Only digests are stored; secrets never reach this module."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from scheduler.domain.auth import ALL_TENANTS, ApiKeyRecord, Role
from scheduler.domain.pagination import Cursor
from scheduler.store.database import Database

_COLUMNS = "id, name, role, tenants, digest, prefix, created_at, expires_at, revoked_at"


def _record(row: Row[Any]) -> ApiKeyRecord:
    m = row._mapping
    return ApiKeyRecord(
        id=str(m["id"]),
        name=m["name"],
        role=Role(m["role"]),
        tenants=frozenset(m["tenants"]),
        digest=bytes(m["digest"]),
        prefix=m["prefix"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
    )


_INSERT = text(f"""
INSERT INTO api_keys (id, name, role, tenants, digest, prefix, created_at, expires_at)
VALUES (:id, :name, :role, :tenants, :digest, :prefix, :created_at, :expires_at)
RETURNING {_COLUMNS}
""")


async def insert_api_key(conn: AsyncConnection, key: ApiKeyRecord) -> ApiKeyRecord:
    row = await conn.execute(
        _INSERT,
        {
            "id": key.id,
            "name": key.name,
            "role": key.role.value,
            "tenants": sorted(key.tenants),
            "digest": key.digest,
            "prefix": key.prefix,
            "created_at": key.created_at,
            "expires_at": key.expires_at,
        },
    )
    return _record(row.one())


_BY_DIGEST = text(f"SELECT {_COLUMNS} FROM api_keys WHERE digest = :digest")


async def select_api_key_by_digest(conn: AsyncConnection, digest: bytes) -> ApiKeyRecord | None:
    """The key whose secret hashes to `digest` (revoked and expired ones included)."""
    row = (await conn.execute(_BY_DIGEST, {"digest": digest})).first()
    return None if row is None else _record(row)


# Newest first. `scope` NULL: every key; else only the keys whose tenants are all in it.
_PAGE = text(f"""
SELECT {_COLUMNS} FROM api_keys
WHERE (CAST(:scope AS text[]) IS NULL OR tenants <@ CAST(:scope AS text[]))
  AND (CAST(:before_at AS timestamptz) IS NULL
       OR (created_at, id) < (CAST(:before_at AS timestamptz), CAST(:before_id AS uuid)))
ORDER BY created_at DESC, id DESC
LIMIT :limit
""")


async def select_api_key_page(
    conn: AsyncConnection, scope: Sequence[str] | None, before: Cursor | None, limit: int
) -> list[ApiKeyRecord]:
    rows = await conn.execute(
        _PAGE,
        {
            "scope": None if scope is None else list(scope),
            "before_at": before.at if before else None,
            "before_id": before.id if before else None,
            "limit": limit,
        },
    )
    return [_record(r) for r in rows]


_REVOKE = text(f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, :now)
WHERE id = :id AND (CAST(:scope AS text[]) IS NULL OR tenants <@ CAST(:scope AS text[]))
RETURNING {_COLUMNS}
""")


async def revoke_api_key(
    conn: AsyncConnection, key_id: str, scope: Sequence[str] | None, now: datetime
) -> ApiKeyRecord | None:
    """Revoke the key (a revoked one keeps its first revocation time); None when there is no
    such key within `scope`."""
    row = (
        await conn.execute(
            _REVOKE, {"id": key_id, "scope": None if scope is None else list(scope), "now": now}
        )
    ).first()
    return None if row is None else _record(row)


_UNUSABLE = text("""
SELECT id, revoked_at IS NOT NULL AS revoked FROM api_keys
WHERE id = ANY(CAST(:ids AS uuid[]))
  AND (revoked_at IS NOT NULL OR (expires_at IS NOT NULL AND expires_at <= :now))
""")


async def select_unusable_api_keys(
    conn: AsyncConnection, ids: Sequence[str], now: datetime
) -> dict[str, bool]:
    """The keys among `ids` revoked or expired at `now` -> whether revoked (else expired); one
    statement for them all."""
    rows = await conn.execute(_UNUSABLE, {"ids": list(ids), "now": now})
    return {str(r[0]): bool(r[1]) for r in rows}


# Bootstraps on several replicas at once (JOBSCHED_BOOTSTRAP_KEY) make one admin key, not one
# each: the check and the insert run under this transaction-scoped advisory lock.
_BOOTSTRAP_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('jobsched.api_keys.bootstrap'))")
_USABLE_ADMIN = text("""
SELECT EXISTS (
    SELECT 1 FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > :now))
""")


async def lock_bootstrap(conn: AsyncConnection) -> None:
    await conn.execute(_BOOTSTRAP_LOCK)


async def usable_admin_key_exists(conn: AsyncConnection, now: datetime) -> bool:
    return bool((await conn.execute(_USABLE_ADMIN, {"now": now})).scalar_one())


class ApiKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, key: ApiKeyRecord) -> ApiKeyRecord:
        async with self.db.transaction() as conn:
            return await insert_api_key(conn, key)

    async def by_digest(self, digest: bytes) -> ApiKeyRecord | None:
        async with self.db.read() as conn:
            return await select_api_key_by_digest(conn, digest)

    async def page(
        self, scope: Sequence[str] | None, before: Cursor | None, limit: int
    ) -> list[ApiKeyRecord]:
        async with self.db.read() as conn:
            return await select_api_key_page(conn, scope, before, limit)

    async def revoke(
        self, key_id: str, scope: Sequence[str] | None, now: datetime
    ) -> ApiKeyRecord | None:
        async with self.db.transaction() as conn:
            return await revoke_api_key(conn, key_id, scope, now)

    async def unusable(self, ids: Sequence[str], now: datetime) -> dict[str, bool]:
        async with self.db.read() as conn:
            return await select_unusable_api_keys(conn, ids, now)

    async def bootstrap(self, key: ApiKeyRecord, now: datetime) -> ApiKeyRecord | None:
        """Store `key` (an admin key) when no usable admin key exists; None when one does, or
        when this very key is stored already (a revoked bootstrap key is never revived)."""
        async with self.db.transaction() as conn:
            await lock_bootstrap(conn)
            if await select_api_key_by_digest(conn, key.digest) is not None:
                return None
            if await usable_admin_key_exists(conn, now):
                return None
            return await insert_api_key(conn, key)

    async def ensure(self, key: ApiKeyRecord) -> ApiKeyRecord | None:
        """Store `key` unless a key of its digest exists (None then: revoked, it stays so)."""
        async with self.db.transaction() as conn:
            await lock_bootstrap(conn)
            if await select_api_key_by_digest(conn, key.digest) is not None:
                return None
            return await insert_api_key(conn, key)


def scope_of(tenants: frozenset[str]) -> list[str] | None:
    """The `scope` argument for a principal's tenants (None: every key)."""
    return None if ALL_TENANTS in tenants else sorted(tenants)
