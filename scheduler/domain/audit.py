"""The audit log's records and the rules for listing them. Pure.

An `AuditEvent` says who (`principal`: an API key's id, or ANONYMOUS when authentication is off
or the caller could not be authenticated) did what (`action`: the RPC's name) to what
(`target`: a job id, a queue, a schedule, a key id...) for which tenant, with which outcome
(`code` "OK" or the gRPC code's name, and the ErrorInfo `reason`), from where (`peer`) and under
which request id. Which calls are recorded is scheduler/auth/audit_table.py; how they are
written is scheduler/auth/audit_writer.py. Nothing here ever holds a credential: values come
from the request's identifiers, and the table names the fields they are read from.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from scheduler.domain.auth import KEY_PREFIX
from scheduler.domain.echo import shorten
from scheduler.domain.errors import FieldViolation, InvalidArgument

ANONYMOUS = "anonymous"
OK = "OK"
# Column bounds (CHECK constraints of migration 0015): what a caller sends is cut, never refused.
MAX_TARGET_CHARS = 300
MAX_TENANT_CHARS = 100
MAX_TEXT_CHARS = 200  # principal names, peers, request ids, reasons
MAX_FILTER_CHARS = 300


REDACTED = "[redacted: looked like an API key]"


def _cut(text: str, limit: int) -> str:
    """`text` bounded; and never what looks like a secret, even one a caller pasted in the
    wrong place (a key as a job id or a tenant)."""
    if KEY_PREFIX in text:
        return REDACTED
    return shorten(text, limit)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    occurred_at: datetime
    principal: str
    principal_name: str
    tenant: str
    action: str
    target: str
    code: str
    reason: str
    peer: str
    request_id: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __post_init__(self) -> None:
        # Everything a caller controls is bounded here, once, whatever path made the event.
        object.__setattr__(self, "target", _cut(self.target, MAX_TARGET_CHARS))
        object.__setattr__(self, "tenant", _cut(self.tenant, MAX_TENANT_CHARS))
        for name in ("principal", "principal_name", "peer", "request_id", "reason"):
            object.__setattr__(self, name, _cut(getattr(self, name), MAX_TEXT_CHARS))

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """ListAuditEvents' filters; empty strings and None match everything. `tenants` None: every
    tenant (a caller acting for all of them), else only rows of those tenants."""

    principal: str = ""
    action: str = ""
    target: str = ""
    after: datetime | None = None  # occurred_at >= after
    before: datetime | None = None  # occurred_at < before
    tenants: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        violations = [
            FieldViolation(name, f"must be at most {MAX_FILTER_CHARS} characters")
            for name in ("principal", "action", "target")
            if len(getattr(self, name)) > MAX_FILTER_CHARS
        ]
        if self.after is not None and self.before is not None and self.after >= self.before:
            violations.append(FieldViolation("end_time", "must be after start_time"))
        if violations:
            raise InvalidArgument(violations)

    def fingerprint_fields(self) -> dict[str, object]:
        return {
            "principal": self.principal,
            "action": self.action,
            "target": self.target,
            "after": self.after.isoformat() if self.after else None,
            "before": self.before.isoformat() if self.before else None,
            "tenants": self.tenants,
        }
