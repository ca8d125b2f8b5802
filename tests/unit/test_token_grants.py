"""The permissions claim of a JWT: "tenant:role" grants (Temporal's model) and the principal of
one call made with them (scheduler/domain/grants.py)."""

from __future__ import annotations

import pytest

from scheduler.domain.auth import ALL_TENANTS, Principal, Role
from scheduler.domain.errors import PermissionDenied
from scheduler.domain.grants import GrantsError, parse_grants, principal_for


def test_grants_are_tenant_role_pairs_and_foreign_entries_are_ignored() -> None:
    claim = [
        "alpha:submitter",
        "Beta:VIEWER",
        "*:executor",
        "billing:superuser",
        "noise",
        "x y:admin",
    ]
    assert parse_grants(claim, "permissions") == {
        "alpha": Role.SUBMITTER,
        "beta": Role.VIEWER,
        ALL_TENANTS: Role.EXECUTOR,
    }


def test_a_scope_like_string_and_an_absent_claim() -> None:
    assert parse_grants("alpha:viewer, beta:operator openid", "scope") == {
        "alpha": Role.VIEWER,
        "beta": Role.OPERATOR,
    }
    assert parse_grants(None, "permissions") == {}
    assert parse_grants(["alpha:viewer", "alpha:viewer"], "permissions") == {"alpha": Role.VIEWER}


@pytest.mark.parametrize(
    "value", [42, {"alpha": "viewer"}, ["alpha:viewer", 3], ["alpha:viewer", "alpha:admin"]]
)
def test_an_unreadable_claim_is_an_error_naming_it(value: object) -> None:
    with pytest.raises(GrantsError, match="groups"):
        parse_grants(value, "groups")


def principal(grants: dict[str, Role], requested: str | None) -> Principal:
    return principal_for("jwt", "alice", "alice", grants, requested)


def test_one_role_throughout_acts_for_all_its_tenants() -> None:
    p = principal({"alpha": Role.EXECUTOR, "beta": Role.EXECUTOR}, None)
    assert (p.kind, p.id, p.role, p.tenants) == (
        "jwt",
        "alice",
        Role.EXECUTOR,
        frozenset({"alpha", "beta"}),
    )
    assert p.tenant_filter == ("alpha", "beta")


def test_a_requested_tenant_gets_its_own_role_or_the_wildcard_one() -> None:
    grants = {"alpha": Role.OPERATOR, "beta": Role.VIEWER, ALL_TENANTS: Role.SUBMITTER}
    assert principal(grants, "beta").role is Role.VIEWER
    assert principal(grants, "beta").tenants == {"beta"}
    assert principal(grants, "gamma").role is Role.SUBMITTER
    assert principal(grants, "gamma").tenant_for("gamma") == "gamma"
    with pytest.raises(PermissionDenied) as raised:
        principal({"alpha": Role.OPERATOR}, "gamma")
    assert raised.value.reason == "TENANT_NOT_ALLOWED"


def test_several_roles_without_a_tenant_use_default_or_must_choose() -> None:
    p = principal({"default": Role.VIEWER, "alpha": Role.ADMIN}, None)
    assert (p.role, p.tenants) == (Role.VIEWER, frozenset({"default"}))
    with pytest.raises(PermissionDenied) as raised:
        principal({"beta": Role.VIEWER, "alpha": Role.ADMIN}, None)
    assert raised.value.reason == "TENANT_NOT_SELECTED"


def test_no_grant_at_all_is_permission_denied() -> None:
    with pytest.raises(PermissionDenied) as raised:
        principal({}, "alpha")
    assert raised.value.reason == "PERMISSION_MISSING"
