"""mTLS identities against a real scheduler (`--auth required`, mutual TLS, identity rules) and a
real PostgreSQL, with a CA and certificates made by the test: the mTLS rows of issue 16's auth
matrix (a client certificate from an untrusted CA and a plaintext client are refused by the
handshake: UNAVAILABLE; a certificate no rule maps is UNAUTHENTICATED; a mapped certificate
lacking the role or tenant is PERMISSION_DENIED), an executor authenticated by its certificate
alone receiving only its tenants' jobs, and the precedence of a bearer credential over the
certificate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import trustme

from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.errors import (
    JobNotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from jobsched.tls import ClientTLS
from jobsched.v1 import job_pb2
from scheduler.auth.mtls import load_identities
from scheduler.domain.auth import new_key
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from scheduler.tls import ServerTLS
from tests.e2e.test_auth import count, job_rows
from tests.helpers import assert_eventually
from tests.identities import ClientCertificate, issue_client_cert
from tests.scripted import serving

ADMIN = new_key()
UNUSED_JOB = "7d3a1c7e-0000-4000-8000-000000000000"
RULES = """
[[identity]]
match = "spiffe://prod/executor-alpha-*"
field = "uri"
role = "executor"
tenants = ["alpha"]
name = "alpha executors"

[[identity]]
match = "*@ops.example"
field = "email"
role = "viewer"
tenants = ["alpha"]

[[identity]]
match = "legacy-operator"
field = "cn"
role = "operator"
tenants = ["alpha", "beta"]
"""


@dataclass(frozen=True)
class Pki:
    ca: Path
    executor: ClientCertificate  # spiffe://prod/executor-alpha-1: executor of alpha
    viewer: ClientCertificate  # ada@ops.example: viewer of alpha
    operator: ClientCertificate  # CN legacy-operator: operator of alpha and beta
    stranger: ClientCertificate  # trusted CA, no rule
    nested: ClientCertificate  # spiffe://prod/executor-alpha-1/x: "*" does not cross "/"
    foreign: ClientCertificate  # another CA altogether
    server: ServerTLS
    authority: trustme.CA

    def tls(self, cert: ClientCertificate | None) -> ClientTLS:
        if cert is None:
            return ClientTLS(ca=self.ca)
        return ClientTLS(ca=self.ca, cert=cert.cert, key=cert.key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA(organization_name="jobsched test")
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server.cert_chain_pems[0].write_to_path(tmp_path / "server.pem")
    server.private_key_pem.write_to_path(tmp_path / "server.key")
    other = trustme.CA(organization_name="somebody else")
    return Pki(
        ca=tmp_path / "ca.pem",
        executor=issue_client_cert(
            ca, tmp_path, "executor", uri=["spiffe://prod/executor-alpha-1"], cn="exec-1"
        ),
        viewer=issue_client_cert(ca, tmp_path, "viewer", email=["ada@ops.example"]),
        operator=issue_client_cert(ca, tmp_path, "operator", cn="legacy-operator"),
        stranger=issue_client_cert(ca, tmp_path, "stranger", dns=["who.example"], cn="who"),
        nested=issue_client_cert(ca, tmp_path, "nested", uri=["spiffe://prod/executor-alpha-1/x"]),
        foreign=issue_client_cert(
            other, tmp_path, "foreign", uri=["spiffe://prod/executor-alpha-1"]
        ),
        server=ServerTLS(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"),
        authority=ca,
    )


@pytest.fixture
async def server(db: Database, pki: Pki, tmp_path: Path) -> AsyncIterator[SchedulerServer]:
    rules = tmp_path / "identities.toml"
    rules.write_text(RULES)
    async with serving(
        db,
        auth="required",
        bootstrap_key=ADMIN,
        tls=pki.server,
        mtls_identities=load_identities(rules),
    ) as s:
        yield s


def client(
    server: SchedulerServer,
    tls: ClientTLS | None,
    token: str | None = None,
    tenant: str | None = None,
) -> JobschedClient:
    return JobschedClient(
        server.address, tls=tls, token=token, tenant=tenant, timeout=10, retries=0
    )


async def test_handshake_refusals_are_unavailable_and_write_nothing(
    server: SchedulerServer, db: Database, pki: Pki
) -> None:
    for tls in (None, pki.tls(None), pki.tls(pki.foreign)):  # plaintext, no cert, untrusted CA
        async with client(server, tls, token=ADMIN) as c:
            with pytest.raises(UnavailableError):
                await c.submit("noop")
    assert await count(db, "jobs") == 0


async def test_a_certificate_no_rule_maps_is_unauthenticated(
    server: SchedulerServer, db: Database, pki: Pki
) -> None:
    for cert in (pki.stranger, pki.nested):
        async with client(server, pki.tls(cert)) as c:
            with pytest.raises(UnauthenticatedError) as raised:
                await c.submit("noop")
        assert raised.value.reason == "CERTIFICATE_UNKNOWN"
    assert await count(db, "jobs") == 0


async def test_a_mapped_certificate_gets_its_role_and_tenants_only(
    server: SchedulerServer, db: Database, pki: Pki
) -> None:
    async with client(server, pki.tls(pki.operator), tenant="alpha") as operator:
        job = await operator.submit("noop")  # CN rule: operator of alpha and beta
    async with client(server, pki.tls(pki.viewer)) as viewer:
        assert (await viewer.get(job.id)).state == job_pb2.JOB_STATE_QUEUED
        with pytest.raises(PermissionDeniedError) as cancel:
            await viewer.cancel(job.id)
    assert cancel.value.reason == "PERMISSION_MISSING"
    async with client(server, pki.tls(pki.viewer), tenant="beta") as as_beta:
        with pytest.raises(PermissionDeniedError) as other_tenant:
            await as_beta.get(job.id)
    assert other_tenant.value.reason == "TENANT_NOT_ALLOWED"
    async with client(server, pki.tls(pki.executor)) as executor:
        with pytest.raises(PermissionDeniedError):  # an executor's certificate reads nothing
            await executor.get(job.id)
    async with client(server, pki.tls(pki.operator), tenant="beta") as beta:
        with pytest.raises(JobNotFoundError):  # tenant B never sees tenant A's job
            await beta.get(job.id)
    assert await job_rows(db) == [(job.id, "alpha", "queued")]


async def test_a_bearer_credential_takes_precedence_over_the_certificate(
    server: SchedulerServer, db: Database, pki: Pki
) -> None:
    # The executor's certificate could read nothing; the admin key it sends can.
    async with client(server, pki.tls(pki.executor), token=ADMIN, tenant="alpha") as c:
        job = await c.submit("noop")
        assert (await c.get(job.id)).id == job.id
    # A certificate no rule maps does not matter when a key is sent (it proved the transport).
    async with client(server, pki.tls(pki.stranger), token=ADMIN, tenant="alpha") as c:
        assert (await c.get(job.id)).id == job.id
    # A refused bearer credential is never made up for by the certificate.
    async with client(server, pki.tls(pki.operator), token=new_key()) as c:
        with pytest.raises(UnauthenticatedError) as raised:
            await c.get(UNUSED_JOB)
    assert raised.value.reason == "CREDENTIAL_UNKNOWN"
    assert await count(db, "jobs") == 1


async def test_an_executor_with_a_certificate_receives_only_the_jobs_of_its_tenants(
    server: SchedulerServer, db: Database, pki: Pki
) -> None:
    async with client(server, pki.tls(pki.operator), tenant="beta") as beta:
        other = await beta.submit("noop", priority=100)  # first in line, for another tenant
    async with client(server, pki.tls(pki.operator), tenant="alpha") as alpha:
        own = await alpha.submit("noop")
        executor = Executor(
            [server.address],
            name="alpha-cert-executor",
            capacity=1,
            registry=builtin_registry(),
            tls=pki.tls(pki.executor),  # no token: the certificate is its credential
        )
        await executor.start()
        try:
            await asyncio.wait_for(executor.wait_registered(), 20)
            [session] = server.dispatcher.sessions.values()
            assert session.tenants == ("alpha",)

            async def done() -> None:
                assert (await alpha.get(own.id)).state == job_pb2.JOB_STATE_SUCCEEDED

            await assert_eventually(done, within=20)
        finally:
            await executor.stop(1.0)
    rows = {i: (t, s) for i, t, s in await job_rows(db)}
    assert rows == {own.id: ("alpha", "succeeded"), other.id: ("beta", "queued")}


async def test_a_certificate_principal_is_named_in_the_access_log(
    server: SchedulerServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="jobsched.rpc")
    async with client(server, pki.tls(pki.viewer)) as viewer:
        with pytest.raises(JobNotFoundError):
            await viewer.get(UNUSED_JOB)

    async def principal() -> None:
        logged = [
            getattr(r, "fields", {}).get("principal")
            for r in caplog.records
            if r.name == "jobsched.rpc"
        ]
        assert "certificate:ada@ops.example" in logged

    await assert_eventually(principal)


async def test_an_executor_stream_ends_when_its_certificate_expires(
    db: Database, pki: Pki, tmp_path: Path
) -> None:
    rules = tmp_path / "identities.toml"
    rules.write_text(RULES)
    short = issue_client_cert(
        pki.authority,
        tmp_path,
        "short",
        uri=["spiffe://prod/executor-alpha-2"],
        ttl=timedelta(seconds=4),
    )
    async with serving(
        db,
        auth="required",
        tls=pki.server,
        mtls_identities=load_identities(rules),
        auth_cache_seconds=0.3,
    ) as server:
        executor = Executor(
            [server.address],
            name="short-lived-cert",
            capacity=1,
            registry=builtin_registry(),
            tls=pki.tls(short),
        )
        await executor.start()
        try:
            await asyncio.wait_for(executor.wait_registered(), 20)
            [session] = server.dispatcher.sessions.values()
            assert session.credential_expires_at is not None

            async def ended() -> None:
                assert server.revocations.ended >= 1
                assert server.dispatcher.sessions == {}  # and its reconnect is refused

            await assert_eventually(ended, within=20)
            assert session.ended is not None
            assert session.ended.reason == "CREDENTIAL_EXPIRED"
        finally:
            await executor.stop(1.0)
