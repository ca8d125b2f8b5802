"""Audit events are bounded and never hold what looks like a key; the list filters are
checked, naming the field."""

from __future__ import annotations

import pytest

from scheduler.domain.audit import (
    MAX_TARGET_CHARS,
    MAX_TENANT_CHARS,
    REDACTED,
    AuditEvent,
    AuditFilters,
)
from scheduler.domain.auth import new_key
from scheduler.domain.errors import InvalidArgument
from tests.helpers import utc

NOW = utc(2026, 6, 1, 12)


def event(**fields: str) -> AuditEvent:
    values = {
        "principal": "anonymous",
        "principal_name": "",
        "tenant": "acme",
        "action": "CancelJob",
        "target": "j1",
        "code": "OK",
        "reason": "",
        "peer": "ipv4:127.0.0.1:1",
        "request_id": "r",
        **fields,
    }
    return AuditEvent(occurred_at=NOW, **values)


def test_what_a_caller_sends_is_cut_to_the_columns_bounds() -> None:
    e = event(target="x" * 100_000, tenant="t" * 1000, peer="p" * 1000)
    assert len(e.target) <= MAX_TARGET_CHARS
    assert e.target.startswith("xxx")
    assert "more characters" in e.target
    assert len(e.tenant) <= MAX_TENANT_CHARS
    assert len(e.peer) <= 200
    assert event().target == "j1"
    assert event().ok
    assert not event(code="NOT_FOUND").ok


def test_a_key_pasted_as_a_target_or_tenant_is_never_stored() -> None:
    key = new_key()
    e = event(target=key, tenant=f"x{key}")
    assert (e.target, e.tenant) == (REDACTED, REDACTED)
    assert key not in repr(e)


def test_filters_are_checked_naming_the_field() -> None:
    with pytest.raises(InvalidArgument) as window:
        AuditFilters(after=NOW, before=NOW)
    assert [v.field for v in window.value.violations] == ["end_time"]
    with pytest.raises(InvalidArgument) as long:
        AuditFilters(target="t" * 301, action="a" * 301)
    assert [v.field for v in long.value.violations] == ["action", "target"]
    assert AuditFilters(principal="anonymous").fingerprint_fields()["principal"] == "anonymous"
