"""Authentication and authorization against real schedulers (`--auth required`) and a real
PostgreSQL: the auth matrix (no credential, malformed, unknown, revoked, expired key; roles
lacking a permission; tenants not the key's; executor keys on JobService and other keys on
Connect), each refused with its code and ErrorInfo reason and writing nothing; executors
receiving only their tenants' jobs; the verified-key cache; bootstrap by environment and by
`jobsched keys bootstrap`; the CLI with --token and JOBSCHED_TOKEN; and the refusal to serve
without authentication beyond loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from sqlalchemy import text

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.errors import (
    InvalidArgumentError,
    JobNotFoundError,
    NotFoundError,
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
from scheduler.api.auth_service import make_key
from scheduler.domain.auth import Role, new_key
from scheduler.server import SchedulerServer
from scheduler.store.api_keys import ApiKeyStore
from scheduler.store.database import Database
from tests.cli import JOBSCHED
from tests.e2e.test_job_service import failure_of
from tests.helpers import assert_eventually
from tests.scripted import serving

ADMIN = new_key()


@pytest.fixture
async def server(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(db, auth="required", bootstrap_key=ADMIN) as s:
        yield s


async def make(
    server: SchedulerServer, role: str, *tenants: str, ttl: timedelta | None = None
) -> str:
    async with JobschedClient(server.address, token=ADMIN, timeout=10) as admin:
        _, secret = await admin.create_api_key(f"{role} key", role, list(tenants), ttl)
    return secret


def client(server: SchedulerServer, token: str | None, tenant: str | None = None) -> JobschedClient:
    return JobschedClient(server.address, token=token, tenant=tenant, timeout=10, retries=0)


async def count(db: Database, table: str) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def job_rows(db: Database) -> list[tuple[str, str, str]]:
    async with db.read() as conn:
        rows = await conn.execute(text("SELECT id, tenant, state FROM jobs ORDER BY id"))
        return [(str(r[0]), r[1], r[2]) for r in rows]


# --- credentials ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "CREDENTIAL_MISSING"),
        ("Basic dXNlcjpwYXNz", "CREDENTIAL_MALFORMED"),
        ("Bearer ", "CREDENTIAL_MALFORMED"),
        ("Bearer not-a-key", "CREDENTIAL_MALFORMED"),
        ("Bearer jsk_short", "CREDENTIAL_MALFORMED"),
        (f"Bearer {new_key()}", "CREDENTIAL_UNKNOWN"),
    ],
)
async def test_calls_without_a_usable_credential_are_unauthenticated_and_write_nothing(
    server: SchedulerServer, db: Database, authorization: str | None, reason: str
) -> None:
    metadata = () if authorization is None else (("authorization", authorization),)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="noop")),
                metadata=metadata,
            )
    failure = failure_of(raised.value)
    assert failure.code is grpc.StatusCode.UNAUTHENTICATED
    assert failure.reason == reason
    assert await count(db, "jobs") == 0


async def test_revoked_and_expired_keys_are_unauthenticated(
    server: SchedulerServer, db: Database
) -> None:
    viewer = await make(server, "viewer", "default")
    async with client(server, viewer) as c:
        assert [j async for j in c.list_active()] == []  # works, and is cached now
    async with client(server, ADMIN) as admin:
        [key] = [k async for k in admin.list_api_keys() if k.role == "viewer"]
        await admin.revoke_api_key(key.id)
    async with client(server, viewer) as c:
        with pytest.raises(UnauthenticatedError) as revoked:
            await c.get("7d3a1c7e-0000-4000-8000-000000000000")
    assert revoked.value.reason == "CREDENTIAL_REVOKED"

    past = datetime.now(UTC) - timedelta(minutes=1)
    record, expired = make_key("old", Role.ADMIN, frozenset({"default"}), past, expires_at=past)
    await ApiKeyStore(db).create(record)
    async with client(server, expired) as c:
        with pytest.raises(UnauthenticatedError) as late:
            await c.submit("noop")
    assert late.value.reason == "CREDENTIAL_EXPIRED"
    assert await count(db, "jobs") == 0


async def test_health_and_reflection_need_no_credential(server: SchedulerServer) -> None:
    async with client(server, None) as c:
        assert await c.health() == "SERVING"


async def test_the_access_log_names_the_principal(
    server: SchedulerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.rpc")
    async with client(server, ADMIN) as admin:
        [key] = [k async for k in admin.list_api_keys()]

    def lines() -> list[dict[str, object]]:
        return [
            dict(getattr(r, "fields", {}))
            for r in caplog.records
            if r.name == "jobsched.rpc"
            and getattr(r, "fields", {}).get("method") == "/jobsched.v1.AuthService/ListApiKeys"
        ]

    async def logged() -> dict[str, object]:
        found = lines()
        assert len(found) == 1
        return found[0]

    line = await assert_eventually(logged)
    assert line["principal"] == f"api_key:{key.id}"


async def test_a_verified_key_is_not_looked_up_again_on_every_call(
    server: SchedulerServer,
) -> None:
    viewer = await make(server, "viewer", "default")
    before = server.authenticator.lookups
    async with client(server, viewer) as c:
        for _ in range(5):
            with pytest.raises(JobNotFoundError):
                await c.get("7d3a1c7e-0000-4000-8000-000000000000")
    assert server.authenticator.lookups == before + 1


async def test_a_revocation_on_another_replica_takes_effect_within_the_cache_bound(
    db: Database,
) -> None:
    async with (
        serving(db, auth="required", bootstrap_key=ADMIN) as first,
        serving(db, auth="required", auth_cache_seconds=0.5) as second,
    ):
        viewer = await make(first, "viewer", "default")
        async with client(second, viewer) as c:
            assert [j async for j in c.list_active()] == []
            async with client(first, ADMIN) as admin:
                [key] = [k async for k in admin.list_api_keys() if k.role == "viewer"]
                await admin.revoke_api_key(key.id)

            async def refused() -> None:
                reason = ""
                try:
                    await c.get("7d3a1c7e-0000-4000-8000-000000000000")
                except UnauthenticatedError as err:
                    reason = err.reason
                except JobNotFoundError:
                    reason = "accepted"
                assert reason == "CREDENTIAL_REVOKED"

            await assert_eventually(refused, within=10)


# --- roles ----------------------------------------------------------------------------------


async def test_a_viewer_cannot_cancel_and_a_submitter_cannot_delete(
    server: SchedulerServer, db: Database
) -> None:
    async with client(server, await make(server, "submitter", "default")) as submitter:
        job = await submitter.submit("noop")
        assert (await submitter.get(job.id)).id == job.id
        with pytest.raises(PermissionDeniedError) as delete:
            await submitter.delete(job.id)
    assert delete.value.reason == "PERMISSION_MISSING"
    async with client(server, await make(server, "viewer", "default")) as viewer:
        assert (await viewer.get(job.id)).state == job_pb2.JOB_STATE_QUEUED
        with pytest.raises(PermissionDeniedError) as cancel:
            await viewer.cancel(job.id)
        with pytest.raises(PermissionDeniedError):
            await viewer.submit("noop")
    assert cancel.value.reason == "PERMISSION_MISSING"
    assert await job_rows(db) == [(job.id, "default", "queued")]
    async with client(server, await make(server, "operator", "default")) as operator:
        assert (await operator.cancel(job.id)).state == job_pb2.JOB_STATE_CANCELLED
        with pytest.raises(PermissionDeniedError):
            await operator.create_api_key("more", "admin", ["default"])
    assert await count(db, "api_keys") == 4  # bootstrap, submitter, viewer, operator: no more


async def test_an_executor_key_cannot_use_job_service(
    server: SchedulerServer, db: Database
) -> None:
    async with client(server, await make(server, "executor", "default")) as executor:
        with pytest.raises(PermissionDeniedError):
            await executor.submit("noop")
        with pytest.raises(PermissionDeniedError):
            await executor.get("7d3a1c7e-0000-4000-8000-000000000000")
    assert await count(db, "jobs") == 0


async def test_only_executor_keys_may_connect(server: SchedulerServer, db: Database) -> None:
    operator = await make(server, "operator", "default")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        register = executor_service_pb2.ConnectRequest(
            register=executor_service_pb2.Register(name="intruder", capacity=1, job_types=["noop"])
        )
        for token, code in (
            (operator, grpc.StatusCode.PERMISSION_DENIED),
            (None, grpc.StatusCode.UNAUTHENTICATED),
        ):
            metadata = () if token is None else (("authorization", f"Bearer {token}"),)
            call = stub.Connect(iter([register]), metadata=metadata)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                async for _ in call:
                    pass
            assert raised.value.code() is code
    assert server.dispatcher.sessions == {}
    async with db.read() as conn:
        assert (await conn.execute(text("SELECT executors FROM scheduler_replicas"))).all() in (
            [],
            [([],)],
        )


# --- tenants --------------------------------------------------------------------------------


async def test_a_key_of_tenant_a_never_reaches_a_job_of_tenant_b(
    server: SchedulerServer, db: Database
) -> None:
    async with client(server, await make(server, "operator", "beta")) as beta:
        job = await beta.submit("noop")  # a single-tenant key needs no tenant: it means beta
    assert await job_rows(db) == [(job.id, "beta", "queued")]
    alpha_key = await make(server, "operator", "alpha")
    async with client(server, alpha_key) as alpha:
        # By id: as if it did not exist, the same answer as for an id nobody uses.
        with pytest.raises(JobNotFoundError) as by_id:
            await alpha.get(job.id)
        with pytest.raises(JobNotFoundError) as unused:
            await alpha.get("7d3a1c7e-0000-4000-8000-000000000000")
        assert by_id.value.message.replace(job.id, "ID") == unused.value.message.replace(
            "7d3a1c7e-0000-4000-8000-000000000000", "ID"
        )
        with pytest.raises(JobNotFoundError):
            await alpha.cancel(job.id)
        with pytest.raises(JobNotFoundError):
            async for _ in alpha.watch(job.id):
                pass
        assert [j async for j in alpha.list_active()] == []
    async with client(server, alpha_key, tenant="beta") as alpha_as_beta:
        with pytest.raises(PermissionDeniedError) as header:
            await alpha_as_beta.get(job.id)
        with pytest.raises(PermissionDeniedError):
            await alpha_as_beta.submit("noop")
    assert header.value.reason == "TENANT_NOT_ALLOWED"
    assert await job_rows(db) == [(job.id, "beta", "queued")]


async def test_a_key_of_several_tenants_selects_one_with_the_header(
    server: SchedulerServer, db: Database
) -> None:
    both = await make(server, "submitter", "alpha", "beta")
    async with client(server, both) as unselected:
        with pytest.raises(PermissionDeniedError) as raised:
            await unselected.submit("noop")
    assert raised.value.reason == "TENANT_NOT_SELECTED"
    async with client(server, both, tenant="beta") as c:
        job = await c.submit("noop")
    assert await job_rows(db) == [(job.id, "beta", "queued")]


async def test_an_admin_manages_only_keys_within_its_tenants(server: SchedulerServer) -> None:
    alpha_admin = await make(server, "admin", "alpha")
    async with client(server, alpha_admin) as c:
        with pytest.raises(PermissionDeniedError):
            await c.create_api_key("sneaky", "viewer", ["beta"])
        with pytest.raises(PermissionDeniedError):
            await c.create_api_key("sneaky", "viewer", ["*"])
        key, _ = await c.create_api_key("mine", "viewer", ["alpha"])
        assert {k.name for k in [k async for k in c.list_api_keys()]} == {"admin key", "mine"}
    async with client(server, ADMIN) as root:
        [bootstrap] = [k async for k in root.list_api_keys() if k.name == "bootstrap admin"]
        assert bootstrap.tenants == ["*"]
        assert not bootstrap.HasField("revoke_time")
    async with client(server, alpha_admin) as c:
        with pytest.raises(NotFoundError):  # not its to see: as if it did not exist
            await c.revoke_api_key(bootstrap.id)
        assert (await c.revoke_api_key(key.id)).HasField("revoke_time")


async def test_an_executor_receives_only_the_jobs_of_its_tenants(
    server: SchedulerServer, db: Database
) -> None:
    async with client(server, ADMIN, tenant="beta") as beta:
        # Older and of higher priority: claimed first by an executor that may take it.
        other = await beta.submit("noop", priority=100)
    async with client(server, ADMIN, tenant="alpha") as alpha:
        own = await alpha.submit("noop")
        executor = Executor(
            [server.address],
            name="alpha-executor",
            capacity=1,
            registry=builtin_registry(),
            token=await make(server, "executor", "alpha"),
        )
        await executor.start()
        try:
            await asyncio.wait_for(executor.wait_registered(), 20)

            async def done() -> None:
                assert (await alpha.get(own.id)).state == job_pb2.JOB_STATE_SUCCEEDED

            await assert_eventually(done, within=20)
        finally:
            await executor.stop(1.0)
    rows = dict((i, (t, s)) for i, t, s in await job_rows(db))
    assert rows == {own.id: ("alpha", "succeeded"), other.id: ("beta", "queued")}
    async with db.read() as conn:
        claimed = await conn.execute(
            text("SELECT count(*) FROM job_events WHERE job_id = :id AND to_state = 'running'"),
            {"id": other.id},
        )
        assert claimed.scalar_one() == 0


async def test_bad_key_requests_name_the_field_and_store_nothing(
    server: SchedulerServer, db: Database
) -> None:
    async with client(server, ADMIN) as admin:
        for args, field in (
            (("ci", "root", ["default"]), "role"),
            (("", "viewer", ["default"]), "name"),
            (("ci", "viewer", []), "tenants"),
            (("ci", "viewer", ["Not A Tenant"]), "tenants[0]"),
            (("ci", "viewer", ["*", "default"]), "tenants"),
        ):
            with pytest.raises(InvalidArgumentError) as raised:
                await admin.create_api_key(*args)
            assert [f for f, _ in raised.value.field_violations] == [field], args
        with pytest.raises(InvalidArgumentError) as ttl:
            await admin.create_api_key("ci", "viewer", ["default"], timedelta(seconds=-1))
        assert [f for f, _ in ttl.value.field_violations] == ["ttl"]
        with pytest.raises(InvalidArgumentError) as bad_id:
            await admin.revoke_api_key("nope")
        assert [f for f, _ in bad_id.value.field_violations] == ["id"]
    assert await count(db, "api_keys") == 1


async def test_revoking_an_executor_key_ends_its_open_streams_on_every_replica(
    db: Database,
) -> None:
    async with (
        serving(db, auth="required", bootstrap_key=ADMIN) as first,
        serving(db, auth="required", auth_cache_seconds=0.5) as second,
    ):
        key = await make(first, "executor", "alpha")
        executors = [
            Executor(
                [s.address], name=f"on-{i}", capacity=1, registry=builtin_registry(), token=key
            )
            for i, s in enumerate((first, second))
        ]
        for executor in executors:
            await executor.start()
        try:
            for executor in executors:
                await asyncio.wait_for(executor.wait_registered(), 20)
            assert len(first.dispatcher.sessions) == len(second.dispatcher.sessions) == 1
            async with client(first, ADMIN) as admin:
                [record] = [k async for k in admin.list_api_keys() if k.role == "executor"]
                await admin.revoke_api_key(record.id)

            async def ended() -> None:
                # at once here (the revocation wakes the sweep), within the cache bound there
                assert first.revocations.ended == 1
                assert second.revocations.ended == 1
                assert first.dispatcher.sessions == {}
                assert second.dispatcher.sessions == {}

            await assert_eventually(ended, within=10)
        finally:
            for executor in executors:
                await executor.stop(1.0)


async def test_an_executor_key_uploads_artifacts_that_readers_of_its_tenant_see(
    server: SchedulerServer,
) -> None:
    async def produce(ctx: JobContext) -> dict[str, bool]:
        await ctx.upload("out.txt", b"made under auth\n")
        return {"ok": True}

    executor = Executor(
        [server.address],
        name="uploader",
        capacity=1,
        registry=builtin_registry(extra=[("produce", produce)]),
        token=await make(server, "executor", "alpha"),
    )
    await executor.start()
    try:
        await asyncio.wait_for(executor.wait_registered(), 20)
        async with client(server, await make(server, "submitter", "alpha")) as alpha:
            job = await alpha.submit("produce")

            async def done() -> None:
                assert (await alpha.get(job.id)).state == job_pb2.JOB_STATE_SUCCEEDED

            await assert_eventually(done, within=20)
            [artifact] = await alpha.list_artifacts(job.id)
            assert artifact.name == "out.txt"
        async with client(server, await make(server, "viewer", "beta")) as beta:
            with pytest.raises(JobNotFoundError):
                await beta.list_artifacts(job.id)
    finally:
        await executor.stop(1.0)


# --- bootstrap ----------------------------------------------------------------------------------


async def test_the_bootstrap_key_is_stored_only_while_no_admin_key_exists(
    server: SchedulerServer, db: Database
) -> None:
    async with client(server, ADMIN) as admin:
        assert (await admin.submit("noop")).id
    late = new_key()
    async with serving(db, auth="required", bootstrap_key=late) as again, client(again, late) as c:
        with pytest.raises(UnauthenticatedError) as raised:
            await c.submit("noop")
    assert raised.value.reason == "CREDENTIAL_UNKNOWN"
    assert await count(db, "api_keys") == 1


async def test_keys_bootstrap_makes_one_admin_key_through_the_database(db: Database) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSCHED_")}
    env.pop("DATABASE_URL", None)

    def bootstrap() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [JOBSCHED, "keys", "bootstrap", "--database-url", db.dsn],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    first = await asyncio.to_thread(bootstrap)
    assert first.returncode == 0, first.stderr
    secret = first.stdout.strip()
    assert secret.startswith("jsk_")
    assert len(secret) == 47
    assert "shown only now" in first.stderr
    second = await asyncio.to_thread(bootstrap)
    assert second.returncode == 1
    assert second.stdout == ""
    assert "an admin key exists already" in second.stderr
    async with serving(db, auth="required") as server, client(server, secret) as c:
        assert [k.name async for k in c.list_api_keys()] == ["bootstrap admin"]


# --- the CLI ------------------------------------------------------------------------------------


async def test_the_cli_sends_its_token_by_flag_and_environment(
    server: SchedulerServer, db: Database
) -> None:
    def jobsched(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSCHED_")}
        return subprocess.run(
            [JOBSCHED, "--address", server.address, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**clean, "COLUMNS": "200", **env},
        )

    made = await asyncio.to_thread(
        jobsched,
        "--token",
        ADMIN,
        "keys",
        "create",
        "--name",
        "ci",
        "--role",
        "submitter",
        "--tenant",
        "alpha",
        "--expires",
        "30d",
    )
    assert made.returncode == 0, made.stderr
    submitter = made.stdout.strip()
    assert submitter.startswith("jsk_")
    listed = await asyncio.to_thread(jobsched, "keys", "ls", JOBSCHED_TOKEN=ADMIN)
    assert listed.returncode == 0, listed.stderr
    assert "ci" in listed.stdout
    assert "submitter" in listed.stdout
    assert submitter not in listed.stdout
    assert submitter[4:] not in listed.stdout
    submitted = await asyncio.to_thread(
        jobsched, "submit", "--type", "noop", JOBSCHED_TOKEN=submitter
    )
    assert submitted.returncode == 0, submitted.stderr
    [(job_id, tenant, _)] = await job_rows(db)
    assert (job_id, tenant) == (submitted.stdout.strip(), "alpha")
    anonymous = await asyncio.to_thread(jobsched, "submit", "--type", "noop")
    assert anonymous.returncode == 7
    assert "credential" in anonymous.stderr
    denied = await asyncio.to_thread(jobsched, "--token", submitter, "delete", job_id)
    assert denied.returncode == 7
    assert len(await job_rows(db)) == 1


# --- switching it on ------------------------------------------------------------------------------


def scheduler_line(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSCHED_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler",
            "--database-url",
            "postgresql://u@127.0.0.1:1/x",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "10.1.2.3:50051", "example.com:1"])
def test_no_authentication_beyond_loopback_without_insecure(listen: str) -> None:
    refused = scheduler_line("--listen", listen)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"jobsched: refusing to listen on {listen} with --auth off")
    for allowed in (["--insecure"], ["--auth", "required"]):
        # Past the check, the unreachable database is the next (and different) complaint.
        result = scheduler_line("--listen", listen, *allowed)
        assert "refusing to listen" not in result.stderr
