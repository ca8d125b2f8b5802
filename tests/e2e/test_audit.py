"""The audit log against real schedulers and a real PostgreSQL: every mutating call leaves
exactly one event with its principal, tenant, target and outcome; every refused credential or
permission leaves one event and nothing else, read calls included; submits and reads leave
none; ListAuditEvents pages and filters, scoped to the caller's tenants; `jobsched audit ls`;
the leader's retention sweep; and with authentication off, the principal is "anonymous"."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import text

from jobsched.client import JobschedClient
from jobsched.errors import (
    InvalidArgumentError,
    JobNotFoundError,
    JobschedError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from jobsched.v1 import (
    executor_service_pb2,
    executor_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)
from scheduler.domain.auth import new_key
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store.database import Database
from tests.cli import cli_ok, run_cli
from tests.e2e.test_auth import count, job_rows
from tests.e2e.test_retention import OffsetClock
from tests.helpers import assert_eventually
from tests.scripted import serving

ADMIN = new_key()
UNUSED_ID = "7d3a1c7e-0000-4000-8000-000000000000"

Row = tuple[str, str, str, str, str, str]  # principal, tenant, action, target, code, reason


@pytest.fixture
async def server(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(db, auth="required", bootstrap_key=ADMIN) as s:
        yield s


def client(server: SchedulerServer, token: str | None, tenant: str | None = None) -> JobschedClient:
    return JobschedClient(server.address, token=token, tenant=tenant, timeout=10, retries=0)


async def make(server: SchedulerServer, role: str, *tenants: str) -> tuple[str, str]:
    """A new key: (its principal, its secret)."""
    async with client(server, ADMIN) as admin:
        key, secret = await admin.create_api_key(f"{role} key", role, list(tenants))
    return f"api_key:{key.id}", secret


async def events(db: Database, after: int = 0) -> list[Row]:
    """The audit rows in the order they were recorded, from the `after`-th on."""
    async with db.read() as conn:
        rows = await conn.execute(
            text(
                "SELECT principal, tenant, action, target, code, reason FROM audit_events"
                " ORDER BY occurred_at, id"
            )
        )
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows][after:]


async def everything(db: Database) -> str:
    """Every column of every audit row, as one text (to look for what must never be there)."""
    async with db.read() as conn:
        rows = await conn.execute(text("SELECT row_to_json(a)::text FROM audit_events a"))
        return "\n".join(r[0] for r in rows)


async def test_each_mutating_call_leaves_one_event_and_submits_and_reads_none(
    server: SchedulerServer, db: Database
) -> None:
    operator, operator_key = await make(server, "operator", "acme")
    admin, admin_key = await make(server, "admin", "acme")
    start = len(await events(db))
    async with client(server, operator_key) as c:
        job = await c.submit("noop")
        await c.submit_many([{"type": "noop"}])
        assert (await c.get(job.id)).id == job.id
        assert len([j async for j in c.list_active()]) == 2
        await c.update_priority(job.id, 80)
        await c.cancel(job.id)
        await c.retry(job.id)
        await c.cancel(job.id)
        assert await c.retry_many(queue="default", states=[job_pb2.JOB_STATE_CANCELLED]) == (
            1,
            False,
        )
        await c.cancel(job.id)
        await c.delete(job.id)
        with pytest.raises(JobNotFoundError):
            await c.cancel(job.id)
        await c.pause_queue("emails")
        await c.resume_queue("emails")
        await c.set_queue_retention("emails", timedelta(days=7))
        await c.set_job_type_defaults("send", max_attempts=5)
        schedule = await c.create_schedule("nightly", "0 3 * * *", {"type": "noop"})
        await c.pause_schedule("nightly")
        await c.resume_schedule(schedule.id)
        await c.trigger_schedule("nightly")
        await c.delete_schedule("nightly")
        assert {q.name for q in await c.queues()} == {"default", "emails"}
    async with client(server, admin_key) as a:
        key, _ = await a.create_api_key("ci", "submitter", ["acme"])
        await a.revoke_api_key(key.id)
        assert len([k async for k in a.list_api_keys()]) == 3
        assert len([e async for e in a.list_audit_events()]) > 0
    ok = ("OK", "")
    assert await events(db, start) == [
        (operator, "acme", action, target, *outcome)
        for action, target, outcome in [
            ("UpdateJobPriority", job.id, ok),
            ("CancelJob", job.id, ok),
            ("RetryJob", job.id, ok),
            ("CancelJob", job.id, ok),
            ("RetryJobs", "queue=default", ok),
            ("CancelJob", job.id, ok),
            ("DeleteJob", job.id, ok),
            ("CancelJob", job.id, ("NOT_FOUND", "JOB_NOT_FOUND")),
            ("PauseQueue", "emails", ok),
            ("ResumeQueue", "emails", ok),
            ("UpdateQueue", "emails", ok),
            ("UpdateJobType", "send", ok),
            ("CreateSchedule", schedule.id, ok),
            ("PauseSchedule", "nightly", ok),
            ("ResumeSchedule", schedule.id, ok),
            ("TriggerSchedule", "nightly", ok),
            ("DeleteSchedule", "nightly", ok),
        ]
    ] + [
        (admin, "acme", "CreateApiKey", key.id, *ok),
        (admin, "acme", "RevokeApiKey", key.id, *ok),
    ]
    # The bootstrap key (every tenant, no header: acting for "default") made the two keys.
    async with client(server, ADMIN) as root:
        [bootstrap] = [k.id async for k in root.list_api_keys() if k.name == "bootstrap admin"]
    assert (await events(db))[:start] == [
        (f"api_key:{bootstrap}", "default", "CreateApiKey", made.removeprefix("api_key:"), *ok)
        for made in (operator, admin)
    ]


async def test_refused_calls_leave_one_event_each_and_nothing_else(
    server: SchedulerServer, db: Database
) -> None:
    viewer, viewer_key = await make(server, "viewer", "acme")
    alpha, alpha_key = await make(server, "operator", "alpha")
    _, beta_key = await make(server, "submitter", "beta")
    async with client(server, beta_key) as beta:
        job = await beta.submit("noop")
    start = len(await events(db))
    unknown = new_key()
    async with client(server, None, tenant="acme") as anonymous:
        with pytest.raises(UnauthenticatedError):
            await anonymous.cancel(job.id)
        with pytest.raises(UnauthenticatedError):
            await anonymous.get(job.id)  # a read: refusals of reads are recorded too
    async with client(server, unknown) as guesser:
        with pytest.raises(UnauthenticatedError):
            await guesser.submit("noop")
    async with client(server, viewer_key) as v:
        with pytest.raises(PermissionDeniedError):
            await v.cancel(job.id)
        with pytest.raises(PermissionDeniedError):
            await v.submit("noop")
    async with client(server, alpha_key, tenant="beta") as a:
        with pytest.raises(PermissionDeniedError):
            await a.get(job.id)
        with pytest.raises(PermissionDeniedError):
            async for _ in a.watch(job.id):
                pass
    async with client(server, alpha_key) as a:
        with pytest.raises(JobNotFoundError):  # by id, as if it did not exist: not a refusal
            await a.get(job.id)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        register = executor_service_pb2.ConnectRequest(
            register=executor_service_pb2.Register(name="intruder", capacity=1, job_types=["noop"])
        )
        call = stub.Connect(iter([register]), metadata=(("authorization", f"Bearer {unknown}"),))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError):
            await job_service_pb2_grpc.JobServiceStub(channel).DeleteJob(
                job_service_pb2.DeleteJobRequest(id=job.id),
                metadata=(("authorization", "Bearer not-a-key"),),
            )
    assert await events(db, start) == [
        ("anonymous", "acme", "CancelJob", job.id, "UNAUTHENTICATED", "CREDENTIAL_MISSING"),
        ("anonymous", "acme", "GetJobStatus", job.id, "UNAUTHENTICATED", "CREDENTIAL_MISSING"),
        ("anonymous", "", "SubmitJob", "", "UNAUTHENTICATED", "CREDENTIAL_UNKNOWN"),
        (viewer, "acme", "CancelJob", job.id, "PERMISSION_DENIED", "PERMISSION_MISSING"),
        (viewer, "acme", "SubmitJob", "", "PERMISSION_DENIED", "PERMISSION_MISSING"),
        (alpha, "beta", "GetJobStatus", job.id, "PERMISSION_DENIED", "TENANT_NOT_ALLOWED"),
        (alpha, "beta", "WatchJob", job.id, "PERMISSION_DENIED", "TENANT_NOT_ALLOWED"),
        ("anonymous", "", "Connect", "", "UNAUTHENTICATED", "CREDENTIAL_UNKNOWN"),
        ("anonymous", "", "DeleteJob", job.id, "UNAUTHENTICATED", "CREDENTIAL_MALFORMED"),
    ]
    # Nothing else was written, and no credential is in the log.
    assert await job_rows(db) == [(job.id, "beta", "queued")]
    assert await count(db, "job_events") == 1
    assert server.dispatcher.sessions == {}
    logged = await everything(db)
    for secret in (unknown, viewer_key, alpha_key, beta_key, ADMIN, "not-a-key"):
        assert secret not in logged
        assert secret[4:14] not in logged  # not even a part


async def test_list_audit_events_pages_filters_and_is_scoped_to_the_callers_tenants(
    server: SchedulerServer, db: Database
) -> None:
    acme, acme_key = await make(server, "admin", "acme")
    async with client(server, acme_key) as c:
        for i in range(12):
            await (c.pause_queue if i % 2 == 0 else c.resume_queue)(f"q{i % 3}")
    async with client(server, None, tenant="globex") as anonymous:
        with pytest.raises(UnauthenticatedError):
            await anonymous.pause_queue("q0")
    async with client(server, acme_key) as c:
        pages: list[list[str]] = []
        token = ""
        while True:
            page, token = await c.list_audit_events_page(page_size=5, page_token=token)
            pages.append([e.id for e in page])
            if not token:
                break
        assert [len(p) for p in pages] == [5, 5, 2]  # acme's 12; not globex's, not the key's
        listed = [e async for e in c.list_audit_events(page_size=5)]
        assert [e.id for e in listed] == [i for p in pages for i in p]
        times = [e.time.ToDatetime() for e in listed]
        assert times == sorted(times, reverse=True)
        assert {e.principal for e in listed} == {acme}
        assert {e.principal_name for e in listed} == {"admin key"}
        assert all(e.peer.startswith("ipv4:127.0.0.1:") and len(e.request_id) == 16 for e in listed)

        paused = [e async for e in c.list_audit_events(action="PauseQueue")]
        assert len(paused) == 6
        assert {e.action for e in paused} == {"PauseQueue"}
        assert len([e async for e in c.list_audit_events(target="q1")]) == 4
        bare_id = acme.removeprefix("api_key:")
        assert len([e async for e in c.list_audit_events(principal=bare_id)]) == 12
        assert [e async for e in c.list_audit_events(principal="anonymous")] == []
        middle = listed[6].time.ToDatetime(tzinfo=UTC)
        newer = [e async for e in c.list_audit_events(since=middle)]
        older = [e async for e in c.list_audit_events(until=middle)]
        assert [e.id for e in newer + older] == [e.id for e in listed]
        assert [e async for e in c.list_audit_events(since=datetime.now(UTC) + timedelta(1))] == []

        with pytest.raises(InvalidArgumentError) as other_filters:
            await c.list_audit_events_page(
                action="ResumeQueue", page_size=5, page_token=pages[0][0]
            )
        assert [f for f, _ in other_filters.value.field_violations] == ["page_token"]
        _, first_token = await c.list_audit_events_page(page_size=5)
        with pytest.raises(InvalidArgumentError) as reused:
            await c.list_audit_events_page(
                action="ResumeQueue", page_size=5, page_token=first_token
            )
        assert [f for f, _ in reused.value.field_violations] == ["page_token"]
        with pytest.raises(InvalidArgumentError) as window:
            await c.list_audit_events_page(since=middle, until=middle)
        assert [f for f, _ in window.value.field_violations] == ["end_time"]
        with pytest.raises(InvalidArgumentError) as negative:
            await c.list_audit_events_page(page_size=-1)
        assert [f for f, _ in negative.value.field_violations] == ["page_size"]
    async with client(server, ADMIN) as root:  # every tenant: globex's refusal too
        everyone = [e async for e in root.list_audit_events()]
    assert ("anonymous", "globex") in {(e.principal, e.tenant) for e in everyone}
    _, operator_key = await make(server, "operator", "acme")
    async with client(server, operator_key) as c:
        with pytest.raises(PermissionDeniedError):
            await c.list_audit_events_page()


async def test_with_authentication_off_the_principal_is_anonymous(db: Database) -> None:
    async with serving(db) as server, client(server, None, tenant="acme") as c:
        job = await c.submit("noop")
        await c.get(job.id)
        await c.cancel(job.id)
        await c.pause_queue("emails")
        listed = [e async for e in c.list_audit_events()]
        audited = server.audit_interceptor.wrapped_methods()
    assert await events(db) == [
        ("anonymous", "acme", "CancelJob", job.id, "OK", ""),
        ("anonymous", "acme", "PauseQueue", "emails", "OK", ""),
    ]
    assert [(e.principal, e.principal_name, e.action) for e in listed] == [
        ("anonymous", "", "PauseQueue"),
        ("anonymous", "", "CancelJob"),
    ]
    # Nothing can be refused without authentication: reads and submits are not even wrapped.
    assert audited == {
        "/jobsched.v1.JobService/CancelJob",
        "/jobsched.v1.QueueService/PauseQueue",
    }


async def test_the_cli_lists_the_audit_log(server: SchedulerServer) -> None:
    _, operator_key = await make(server, "operator", "default")
    async with client(server, operator_key) as c:
        job = await c.submit("noop")
        await c.cancel(job.id)
        await c.pause_queue("emails")
    table = await cli_ok(server.address, "--token", ADMIN, "audit", "ls")
    assert "CancelJob" in table
    assert "PauseQueue" in table
    assert "operator key" in table
    assert operator_key not in table
    out = await cli_ok(
        server.address, "--token", ADMIN, "audit", "ls", "--action", "CancelJob", "--json"
    )
    [event] = json.loads(out)
    assert (event["action"], event["target"], event["code"]) == ("CancelJob", job.id, "OK")
    assert event["tenant"] == "default"
    newest = json.loads(
        await cli_ok(server.address, "--token", ADMIN, "audit", "ls", "--limit", "1", "--json")
    )
    assert [e["action"] for e in newest] == ["PauseQueue"]
    since = json.loads(
        await cli_ok(server.address, "--token", ADMIN, "audit", "ls", "--since", "1h", "--json")
    )
    assert [e["action"] for e in since] == ["PauseQueue", "CancelJob", "CreateApiKey"]
    code, _, err = await run_cli(server.address, "--token", ADMIN, "audit", "ls", "--since", "x")
    assert code == 2
    assert "--since" in err
    code, _, err = await run_cli(server.address, "--token", operator_key, "audit", "ls")
    assert code == 7
    assert "audit.read" in err


async def test_a_change_whose_event_cannot_be_stored_is_not_acknowledged(
    server: SchedulerServer, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="jobsched.audit")
    _, operator_key = await make(server, "operator", "default")
    async with client(server, operator_key) as c:
        job = await c.submit("noop")
        async with db.transaction() as conn:  # from now on every audit INSERT fails
            await conn.execute(
                text("ALTER TABLE audit_events ADD CONSTRAINT refuse CHECK (false) NOT VALID")
            )
        with pytest.raises(JobschedError) as raised:
            await c.cancel(job.id)
    assert raised.value.code is grpc.StatusCode.INTERNAL  # not acknowledged as done
    async with client(server, None) as anonymous:
        with pytest.raises(UnauthenticatedError):  # a refusal stays a refusal
            await anonymous.cancel(job.id)
    unrecorded = [
        dict(getattr(r, "fields", {}))
        for r in caplog.records
        if getattr(r, "fields", {}).get("event") == "audit.unrecorded"
    ]
    # Neither event is lost without a trace: both are in the log, whole (and no credential).
    assert [(f["action"], f["target"], f["code"]) for f in unrecorded] == [
        ("CancelJob", job.id, "OK"),
        ("CancelJob", job.id, "UNAUTHENTICATED"),
    ]
    assert all(f["request_id"] and f["peer"] for f in unrecorded)
    assert operator_key not in caplog.text


async def test_a_revoked_key_is_refused_under_its_own_name(
    server: SchedulerServer, db: Database
) -> None:
    viewer, viewer_key = await make(server, "viewer", "acme")
    async with client(server, ADMIN) as admin:
        await admin.revoke_api_key(viewer.removeprefix("api_key:"))
    start = len(await events(db))
    async with client(server, viewer_key) as c:
        with pytest.raises(UnauthenticatedError) as raised:
            await c.get(UNUSED_ID)
    assert raised.value.reason == "CREDENTIAL_REVOKED"
    assert viewer.removeprefix("api_key:") not in raised.value.message  # not told to the caller
    # Not authenticated, so it acts for no tenant; but the log says whose key it was.
    assert await events(db, start) == [
        (viewer, "", "GetJobStatus", UNUSED_ID, "UNAUTHENTICATED", "CREDENTIAL_REVOKED")
    ]


async def test_the_leader_deletes_audit_events_past_the_audit_retention(db: Database) -> None:
    clock = OffsetClock()
    settings = ServerSettings(
        listen="127.0.0.1:0",
        shutdown_grace=1.0,
        leader_tick=0.1,
        leader_renew_timeout=1.0,
        audit_retention=timedelta(days=90),
    )
    server = SchedulerServer(db, settings, clock)
    await server.start()
    try:
        async with client(server, None) as c:
            await c.pause_queue("old")
            clock.offset = timedelta(days=60)
            await c.pause_queue("recent")

            async def leads() -> None:
                assert server.leader.is_leader

            await assert_eventually(leads)
            clock.offset = timedelta(days=91)  # "old" is 91 days old, "recent" 31
            await server.retention.sweep()
            assert server.retention.audit_deleted_total == 1
            assert [e.target async for e in c.list_audit_events()] == ["recent"]
    finally:
        await server.stop()
