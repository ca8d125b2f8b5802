"""Verifying a presented API key against the store (real PostgreSQL): the stored digest is
compared with the presented key's in constant time (hmac.compare_digest), on the path every
uncached key takes, and a record whose digest differs is refused even if the store returned
it."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

import pytest

from scheduler.api.auth_service import make_key
from scheduler.auth import api_keys
from scheduler.auth.api_keys import ApiKeyAuthenticator
from scheduler.domain import auth
from scheduler.domain.auth import ApiKeyRecord, Role, key_digest, new_key
from scheduler.domain.errors import Unauthenticated
from scheduler.store.api_keys import ApiKeyStore
from scheduler.store.database import Database

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_digests_are_compared_with_hmac_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    assert auth.same_digest(b"a" * 32, b"a" * 32)
    assert not auth.same_digest(b"a" * 32, b"b" * 32)
    assert len(calls) == 2


async def test_a_key_is_checked_by_a_constant_time_comparison_of_digests(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ApiKeyStore(db)
    record, secret = make_key("ci", Role.VIEWER, frozenset({"default"}), NOW)
    await store.create(record)
    compared: list[tuple[bytes, bytes]] = []

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return auth.same_digest(a, b)

    monkeypatch.setattr(api_keys, "same_digest", spy)
    authenticator = ApiKeyAuthenticator(store, lambda: NOW, cache_seconds=0)
    assert (await authenticator.authenticate(secret)).id == record.id
    assert compared == [(record.digest, key_digest(secret))]
    with pytest.raises(Unauthenticated) as refused:
        await authenticator.authenticate(new_key())
    assert refused.value.reason == "CREDENTIAL_UNKNOWN"


async def test_a_record_with_another_digest_is_refused(db: Database) -> None:
    record, secret = make_key("ci", Role.ADMIN, frozenset({"*"}), NOW)

    class Lying(ApiKeyStore):
        async def by_digest(self, digest: bytes) -> ApiKeyRecord | None:
            return record  # whatever was asked for

    authenticator = ApiKeyAuthenticator(Lying(db), lambda: NOW)
    assert (await authenticator.authenticate(secret)).id == record.id
    with pytest.raises(Unauthenticated) as refused:
        await authenticator.authenticate(new_key())
    assert refused.value.reason == "CREDENTIAL_UNKNOWN"
