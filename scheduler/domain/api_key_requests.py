"""Validation of API key requests (AuthService.CreateApiKey): name, role, tenants, lifetime."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta

from scheduler.domain.auth import ALL_TENANTS, Role
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.validation import NAME_PATTERN

MAX_KEY_NAME = 200
MAX_KEY_TENANTS = 100
MAX_KEY_TTL = timedelta(days=3650)
ROLE_NAMES = ", ".join(r.value for r in Role)


def validate_key_request(
    name: str, role: str, tenants: Sequence[str], ttl: timedelta | None
) -> tuple[str, Role, frozenset[str]]:
    """(name, role, tenants) of a valid request; InvalidArgument naming every bad field."""
    violations: list[FieldViolation] = []
    if not 1 <= len(name.strip()) <= MAX_KEY_NAME:
        violations.append(FieldViolation("name", f"1 to {MAX_KEY_NAME} characters"))
    try:
        parsed_role: Role | None = Role(role.lower())
    except ValueError:
        parsed_role = None
        violations.append(FieldViolation("role", f"must be one of {ROLE_NAMES}"))
    if not tenants:
        violations.append(FieldViolation("tenants", "at least one tenant"))
    elif len(tenants) > MAX_KEY_TENANTS:
        violations.append(FieldViolation("tenants", f"at most {MAX_KEY_TENANTS} tenants"))
    normalised: set[str] = set()
    for i, tenant in enumerate(tenants[:MAX_KEY_TENANTS]):
        value = tenant.lower()
        if value != ALL_TENANTS and not NAME_PATTERN.fullmatch(value):
            violations.append(
                FieldViolation(f"tenants[{i}]", f'must match {NAME_PATTERN.pattern} or be "*"')
            )
        normalised.add(value)
    if ALL_TENANTS in normalised and len(normalised) > 1:
        violations.append(FieldViolation("tenants", '"*" (every tenant) stands alone'))
    if ttl is not None and not timedelta(0) < ttl <= MAX_KEY_TTL:
        violations.append(
            FieldViolation("ttl", f"must be positive, at most {MAX_KEY_TTL.days} days")
        )
    if violations or parsed_role is None:
        raise InvalidArgument(violations)
    return name.strip(), parsed_role, frozenset(normalised)


def validate_key_id(value: str, path: str = "id") -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument([FieldViolation(path, "must be a UUID")]) from None
