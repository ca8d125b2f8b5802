"""AuditService: ListAuditEvents, newest first with keyset pages, filtered by principal,
action, target and time; an admin sees only the events of its own tenants."""

from __future__ import annotations

from typing import Any

import grpc

from jobsched.v1 import audit_service_pb2 as pb
from jobsched.v1 import audit_service_pb2_grpc
from scheduler.api.auth_service import AUTH_OFF
from scheduler.api.convert import from_timestamp, timestamp
from scheduler.auth.identity import current_principal
from scheduler.domain.audit import ANONYMOUS, AuditEvent, AuditFilters
from scheduler.domain.pagination import Cursor, decode_token, encode_token, fingerprint, page_size
from scheduler.store.audit import AuditStore

Context = grpc.aio.ServicerContext[Any, Any]


def audit_event_to_proto(event: AuditEvent) -> pb.AuditEvent:
    return pb.AuditEvent(
        id=event.id,
        time=timestamp(event.occurred_at),
        principal=event.principal,
        principal_name=event.principal_name,
        tenant=event.tenant,
        action=event.action,
        target=event.target,
        code=event.code,
        reason=event.reason,
        peer=event.peer,
        request_id=event.request_id,
    )


def principal_filter(value: str) -> str:
    """A bare key id means that API key's events ("api_key:<id>", as they are recorded)."""
    if not value or ":" in value or value == ANONYMOUS:
        return value
    return f"api_key:{value}"


class AuditService(audit_service_pb2_grpc.AuditServiceServicer):
    def __init__(self, store: AuditStore) -> None:
        self.store = store

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context
    ) -> pb.ListAuditEventsResponse:
        limit = page_size(request.page_size)
        caller = current_principal() or AUTH_OFF
        filters = AuditFilters(
            principal=principal_filter(request.principal),
            action=request.action,
            target=request.target,
            after=(
                from_timestamp(request.start_time, "start_time")
                if request.HasField("start_time")
                else None
            ),
            before=(
                from_timestamp(request.end_time, "end_time")
                if request.HasField("end_time")
                else None
            ),
            tenants=caller.tenant_filter,
        )
        fp = fingerprint(filters.fingerprint_fields())
        before = decode_token(request.page_token, fp)
        events = await self.store.page(filters, before, limit + 1)
        token = ""
        if len(events) > limit:
            last = events[limit - 1]
            token = encode_token(Cursor(at=last.occurred_at, id=last.id), fp)
        return pb.ListAuditEventsResponse(
            events=[audit_event_to_proto(e) for e in events[:limit]], next_page_token=token
        )
