"""Grants: the roles a token gives its holder per tenant, and the principal of one call. Pure.

A JWT says what its holder may do in a claim modelled on Temporal's
`permissions: ["tenant:role", ...]` (the claim's name is configurable): `"alpha:submitter"`
is the submitter role in tenant alpha, `"*:admin"` the admin role in every tenant. Unlike an API
key, a token may give different roles in different tenants, so its principal is made per call:

- a call naming a tenant (x-jobsched-tenant) gets the role the token gives there (else the one
  it gives in "*"), acting for that tenant only; a tenant it gives nothing in is refused
  (PERMISSION_DENIED, TENANT_NOT_ALLOWED);
- a call naming none gets the token's one role in all its tenants when it gives one role
  throughout; otherwise its role in "default" if it has one there, else it must choose
  (PERMISSION_DENIED, TENANT_NOT_SELECTED).

Entries that are not `tenant:role` with a known role are ignored: an identity provider's token
often carries permissions of other systems in the same claim. A tenant given two different roles
makes the claim invalid (which was meant cannot be told).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

from scheduler.domain.auth import ALL_TENANTS, DEFAULT_TENANT, Principal, Role
from scheduler.domain.errors import PermissionDenied
from scheduler.domain.validation import NAME_PATTERN

_SEPARATORS = re.compile(r"[\s,]+")
_ROLES = {role.value: role for role in Role}


class GrantsError(ValueError):
    """The permissions claim cannot be read (not a list of strings, a tenant given two roles)."""


def parse_grants(value: object, claim: str) -> dict[str, Role]:
    """tenant -> role from a permissions claim: a list of "tenant:role" strings, or one string
    of them separated by spaces or commas (an OAuth `scope`-like claim)."""
    if value is None:
        return {}
    if isinstance(value, str):
        entries: list[object] = [part for part in _SEPARATORS.split(value) if part]
    elif isinstance(value, list):
        entries = value
    else:
        raise GrantsError(f"the {claim} claim must be a list of 'tenant:role' strings")
    grants: dict[str, Role] = {}
    for entry in entries:
        if not isinstance(entry, str):
            raise GrantsError(f"the {claim} claim must be a list of 'tenant:role' strings")
        tenant, colon, role_name = entry.strip().lower().rpartition(":")
        role = _ROLES.get(role_name)
        if not colon or role is None:
            continue  # not ours (another system's permission)
        if tenant != ALL_TENANTS and not NAME_PATTERN.fullmatch(tenant):
            continue
        if grants.get(tenant, role) is not role:
            raise GrantsError(f"the {claim} claim gives tenant {tenant!r} two roles")
        grants[tenant] = role
    return grants


def principal_for(
    kind: str,
    id: str,
    name: str,
    grants: Mapping[str, Role],
    requested: str | None,
    expires_at: datetime | None = None,
) -> Principal:
    """The principal of one call by a token holder with `grants` (see the module docstring)."""
    if not grants:
        raise PermissionDenied(
            "PERMISSION_MISSING", "the token gives no role in any tenant (its permissions claim)"
        )
    if requested is not None:
        role = grants.get(requested) or grants.get(ALL_TENANTS)
        if role is None:
            raise PermissionDenied(
                "TENANT_NOT_ALLOWED", f"the credential may not act for tenant {requested!r}"
            )
        return Principal(kind, id, name, role, frozenset({requested}), expires_at)
    roles = set(grants.values())
    if len(roles) == 1:
        return Principal(kind, id, name, roles.pop(), frozenset(grants), expires_at)
    if DEFAULT_TENANT in grants:
        return Principal(
            kind, id, name, grants[DEFAULT_TENANT], frozenset({DEFAULT_TENANT}), expires_at
        )
    raise PermissionDenied(
        "TENANT_NOT_SELECTED",
        "the token gives different roles in several tenants: choose one with x-jobsched-tenant",
    )
