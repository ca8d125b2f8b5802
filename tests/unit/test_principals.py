"""Principals (pure): the tenant a call acts for, bearer parsing, key format and digests."""

from __future__ import annotations

import pytest

from scheduler.domain.auth import (
    Permission,
    Principal,
    Role,
    bearer_token,
    check_key_format,
    key_digest,
    new_key,
)
from scheduler.domain.errors import PermissionDenied, Unauthenticated


def principal(*tenants: str, role: Role = Role.VIEWER) -> Principal:
    return Principal("api_key", "id", "name", role, frozenset(tenants))


def test_a_single_tenant_principal_means_its_tenant() -> None:
    assert principal("acme").tenant_for(None) == "acme"
    assert principal("acme").tenant_for("acme") == "acme"
    with pytest.raises(PermissionDenied) as raised:
        principal("acme").tenant_for("other")
    assert raised.value.reason == "TENANT_NOT_ALLOWED"


def test_several_tenants_need_a_choice_unless_default_is_one() -> None:
    with pytest.raises(PermissionDenied) as raised:
        principal("a", "b").tenant_for(None)
    assert raised.value.reason == "TENANT_NOT_SELECTED"
    assert principal("a", "b").tenant_for("b") == "b"
    assert principal("a", "default").tenant_for(None) == "default"


def test_every_tenant_principal() -> None:
    every = principal("*")
    assert every.tenant_for(None) == "default"
    assert every.tenant_for("anything") == "anything"
    assert every.tenant_filter is None
    assert principal("b", "a").tenant_filter == ("a", "b")
    assert every.covers(frozenset({"*"}))
    assert principal("a", "b").covers(frozenset({"a"}))
    assert not principal("a").covers(frozenset({"a", "b"}))
    assert not principal("a").covers(frozenset({"*"}))


def test_permissions_follow_the_role() -> None:
    principal("a", role=Role.SUBMITTER).require(Permission.SUBMIT)
    with pytest.raises(PermissionDenied) as raised:
        principal("a", role=Role.EXECUTOR).require(Permission.READ)
    assert raised.value.reason == "PERMISSION_MISSING"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "CREDENTIAL_MISSING"),
        ("", "CREDENTIAL_MALFORMED"),
        ("Token abc", "CREDENTIAL_MALFORMED"),
        ("Bearer", "CREDENTIAL_MALFORMED"),
    ],
)
def test_bearer_parsing(value: str | None, reason: str) -> None:
    with pytest.raises(Unauthenticated) as raised:
        bearer_token(value)
    assert raised.value.reason == reason


def test_keys_have_a_prefix_and_are_hashed() -> None:
    key = new_key()
    assert bearer_token(f"bearer  {key} ") == key
    check_key_format(key)
    assert key != new_key()
    assert len(key_digest(key)) == 32
    assert key_digest(key) == key_digest(key) != key_digest(new_key())
    for bad in ("jsk_", key[:-1], key + "x", "xsk_" + key[4:], key[:-1] + "!"):
        with pytest.raises(Unauthenticated):
            check_key_format(bad)
