"""JWT bearer tokens against real schedulers (`--auth required` with a JWKS) and a real
PostgreSQL: the JWT rows of issue 16's auth matrix (bad signature, wrong issuer, wrong audience,
expired, unknown key id, refused algorithms, missing claims), each UNAUTHENTICATED with its
reason and writing nothing; the permissions claim giving tenants and roles (PERMISSION_DENIED
for a role or tenant it does not give); an executor authenticated by a JWT receiving only its
tenants' jobs; the verified-token cache; a JWKS URL read again on an unknown key id
(rate-limited) and on its interval; and the Python client and the CLI passing a JWT unchanged."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import jwt
import pytest

from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.errors import JobNotFoundError, PermissionDeniedError, UnauthenticatedError
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.auth.jwt import JwtSettings
from scheduler.domain.auth import new_key
from scheduler.domain.rate_limits import RateLimitPolicy
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.cli import JOBSCHED
from tests.e2e.test_auth import count, job_rows
from tests.e2e.test_job_service import failure_of
from tests.helpers import assert_eventually
from tests.identities import AUDIENCE, ISSUER, JwksServer, SigningKey, write_jwks
from tests.scripted import serving

ADMIN = new_key()
KEY = SigningKey.make("key-1")
OTHER = SigningKey.make("key-1")  # the same kid, another key: its signatures do not verify
UNUSED_JOB = "7d3a1c7e-0000-4000-8000-000000000000"


def settings(jwks: str, **overrides: object) -> JwtSettings:
    values: dict[str, object] = {"jwks": jwks, "issuer": ISSUER, "audience": AUDIENCE}
    return JwtSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture
async def server(db: Database, tmp_path: Path) -> AsyncIterator[SchedulerServer]:
    jwks = write_jwks(tmp_path / "jwks.json", KEY)
    async with serving(db, auth="required", bootstrap_key=ADMIN, jwt=settings(str(jwks))) as s:
        yield s


def client(server: SchedulerServer, token: str | None, tenant: str | None = None) -> JobschedClient:
    return JobschedClient(server.address, token=token, tenant=tenant, timeout=10, retries=0)


async def submit_raw(
    server: SchedulerServer, token: str, tenant: str | None = None
) -> grpc.aio.AioRpcError:
    """A SubmitJob with this bearer token (and x-jobsched-tenant) that must fail; its error."""
    metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),)
    if tenant is not None:
        metadata += (("x-jobsched-tenant", tenant),)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="noop")),
                metadata=metadata,
            )
    return raised.value


def _refused_tokens() -> Iterator[tuple[str, str, str]]:
    yield "bad signature", OTHER.token(), "JWT_SIGNATURE_INVALID"
    yield "wrong issuer", KEY.token(iss="https://evil.example"), "JWT_ISSUER_INVALID"
    yield "wrong audience", KEY.token(aud="another-service"), "JWT_AUDIENCE_INVALID"
    yield "expired", KEY.token(ttl=-120), "CREDENTIAL_EXPIRED"  # past the 30 s leeway
    yield "not yet valid", KEY.token(nbf=9_999_999_999), "JWT_NOT_YET_VALID"
    yield "unknown kid", KEY.token(kid="key-9"), "JWT_KEY_UNKNOWN"
    yield "no exp", KEY.token(exp=None), "JWT_CLAIM_MISSING"
    yield "no sub", KEY.token(sub=None), "JWT_CLAIM_MISSING"
    yield "no iss", KEY.token(iss=None), "JWT_CLAIM_MISSING"
    hs256 = jwt.encode(  # the public key's JWK as an HMAC secret: algorithm confusion
        {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": 9_999_999_999},
        str(KEY.jwk()["n"]),
        algorithm="HS256",
        headers={"kid": "key-1"},
    )
    yield "HS256", hs256, "JWT_ALGORITHM_NOT_ALLOWED"
    header = jwt.utils.base64url_encode(b'{"alg":"none","kid":"key-1"}').decode()
    body = jwt.utils.base64url_encode(
        b'{"sub":"mallory","iss":"%s","aud":"%s","exp":9999999999}'
        % (ISSUER.encode(), AUDIENCE.encode())
    ).decode()
    yield "alg none", f"{header}.{body}.", "JWT_ALGORITHM_NOT_ALLOWED"
    yield "garbage", "not-a-jwt", "CREDENTIAL_MALFORMED"
    yield "bad claim", KEY.token(["alpha:viewer", "alpha:admin"]), "JWT_CLAIM_INVALID"


@pytest.mark.parametrize(
    ("token", "reason"),
    [(token, reason) for _, token, reason in _refused_tokens()],
    ids=[name for name, _, _ in _refused_tokens()],
)
async def test_refused_tokens_are_unauthenticated_and_write_nothing(
    server: SchedulerServer, db: Database, token: str, reason: str
) -> None:
    failure = failure_of(await submit_raw(server, token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, reason)
    assert await count(db, "jobs") == 0


async def test_a_refused_token_is_unauthenticated_before_its_tenant_header_is_read(
    server: SchedulerServer,
) -> None:
    refused = failure_of(await submit_raw(server, OTHER.token(), tenant="Not A Tenant!"))
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "JWT_SIGNATURE_INVALID",
    )
    bad_header = await submit_raw(server, KEY.token(["*:submitter"]), tenant="Not A Tenant!")
    assert bad_header.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_token_acts_for_the_tenants_and_roles_of_its_permissions_claim(
    server: SchedulerServer, db: Database
) -> None:
    async with client(server, KEY.token(["alpha:submitter"])) as alpha:
        job = await alpha.submit("noop")  # one tenant: no header needed
        assert (await alpha.get(job.id)).id == job.id
        with pytest.raises(PermissionDeniedError) as cancel:
            await alpha.cancel(job.id)
    assert cancel.value.reason == "PERMISSION_MISSING"
    async with client(server, KEY.token(["alpha:submitter"]), tenant="beta") as as_beta:
        with pytest.raises(PermissionDeniedError) as other_tenant:
            await as_beta.get(job.id)
    assert other_tenant.value.reason == "TENANT_NOT_ALLOWED"
    async with client(server, KEY.token(["beta:operator"])) as beta:
        with pytest.raises(JobNotFoundError):  # tenant B's token never sees tenant A's job
            await beta.get(job.id)
        with pytest.raises(JobNotFoundError):
            await beta.cancel(job.id)
    async with client(server, KEY.token([])) as nothing:
        with pytest.raises(PermissionDeniedError) as no_grant:
            await nothing.get(job.id)
    assert no_grant.value.reason == "PERMISSION_MISSING"
    mixed = KEY.token(["alpha:operator", "beta:viewer", "other-system:superuser"])
    async with client(server, mixed) as unselected:
        with pytest.raises(PermissionDeniedError) as choose:
            await unselected.get(job.id)
    assert choose.value.reason == "TENANT_NOT_SELECTED"
    async with client(server, mixed, tenant="beta") as as_viewer:
        with pytest.raises(PermissionDeniedError):
            await as_viewer.submit("noop")  # viewer in beta
    async with client(server, mixed, tenant="alpha") as as_operator:
        assert (await as_operator.cancel(job.id)).state == job_pb2.JOB_STATE_CANCELLED
    assert await job_rows(db) == [(job.id, "alpha", "cancelled")]
    async with client(server, KEY.token(["*:viewer"]), tenant="alpha") as everywhere:
        assert (await everywhere.get(job.id)).state == job_pb2.JOB_STATE_CANCELLED


async def test_a_verified_token_is_not_verified_again_on_every_call(
    server: SchedulerServer,
) -> None:
    token = KEY.token(["default:viewer"], sub="cached")
    jwt_auth = server.credentials.jwt
    assert jwt_auth is not None
    before = jwt_auth.verifications
    async with client(server, token) as c:
        for _ in range(5):
            with pytest.raises(JobNotFoundError):
                await c.get(UNUSED_JOB)
    assert jwt_auth.verifications == before + 1


async def test_an_executor_with_a_token_receives_only_the_jobs_of_its_tenants(
    server: SchedulerServer, db: Database
) -> None:
    async with client(server, ADMIN, tenant="beta") as beta:
        other = await beta.submit("noop", priority=100)  # first in line, for another tenant
    async with client(server, ADMIN, tenant="alpha") as alpha:
        own = await alpha.submit("noop")
        executor = Executor(
            [server.address],
            name="alpha-jwt-executor",
            capacity=1,
            registry=builtin_registry(),
            token=KEY.token(["alpha:executor"], sub="executor-7"),
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
    async with client(server, KEY.token(["alpha:executor"])) as executor_token:
        with pytest.raises(PermissionDeniedError):  # an executor's token reads nothing
            await executor_token.get(own.id)


async def test_the_cli_passes_a_jwt_unchanged(server: SchedulerServer, db: Database) -> None:
    token = KEY.token(["gamma:submitter"], sub="ci")

    def jobsched(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSCHED_")}
        return subprocess.run(
            [JOBSCHED, "--address", server.address, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**clean, **env},
        )

    by_env = await asyncio.to_thread(jobsched, "submit", "--type", "noop", JOBSCHED_TOKEN=token)
    assert by_env.returncode == 0, by_env.stderr
    by_flag = await asyncio.to_thread(jobsched, "--token", token, "submit", "--type", "noop")
    assert by_flag.returncode == 0, by_flag.stderr
    assert {(i, t) for i, t, _ in await job_rows(db)} == {
        (by_env.stdout.strip(), "gamma"),
        (by_flag.stdout.strip(), "gamma"),
    }


# --- a JWKS URL -------------------------------------------------------------------------------


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer(KEY).running() as http:
        yield http


async def test_an_unknown_kid_reads_the_jwks_url_again_at_most_once_per_interval(
    db: Database, jwks_server: JwksServer
) -> None:
    rotated = SigningKey.make("key-2")
    jwt_settings = settings(jwks_server.url, jwks_min_refresh=1.0, jwks_refresh=3600)
    # The flood of unknown kids below is what the failed-authentication gate (rate limits) is
    # for; it is switched off here so that this test measures the JWKS reads alone (the gate
    # has its own tests in tests/e2e/test_rate_limits.py).
    ungated = RateLimitPolicy.parse(["unauthenticated=off"])
    async with serving(db, auth="required", jwt=jwt_settings, rate_limits=ungated) as server:
        assert jwks_server.requests == 1  # read at start
        async with client(server, KEY.token(["default:viewer"])) as c:
            with pytest.raises(JobNotFoundError):
                await c.get(UNUSED_JOB)
        # A flood of made-up key ids: one read of the URL at most, however many calls.
        flood = [SigningKey.make(f"bogus-{i}").token() for i in range(3)] * 10
        errors = await asyncio.gather(*(submit_raw(server, t) for t in flood))
        assert {failure_of(e).reason for e in errors} == {"JWT_KEY_UNKNOWN"}
        assert jwks_server.requests <= 2
        # The identity provider rotates: the new kid is found by reading the URL again.
        jwks_server.publish(KEY, rotated)

        async def accepted() -> None:
            async with client(server, rotated.token(["default:viewer"])) as c:
                try:
                    await c.get(UNUSED_JOB)
                except UnauthenticatedError as err:
                    raise AssertionError(f"still refused: {err.reason}") from None
                except JobNotFoundError:
                    pass  # authenticated: the job does not exist

        await assert_eventually(accepted, within=10)
        assert jwks_server.requests <= 4


async def test_the_jwks_url_is_read_again_on_its_interval_and_a_removed_key_stops_working(
    db: Database, jwks_server: JwksServer
) -> None:
    jwt_settings = settings(jwks_server.url, jwks_refresh=0.3, jwks_min_refresh=3600)
    async with serving(db, auth="required", jwt=jwt_settings) as server:
        token = KEY.token(["default:viewer"])
        async with client(server, token) as c:
            with pytest.raises(JobNotFoundError):
                await c.get(UNUSED_JOB)  # verified and cached
            jwks_server.publish(SigningKey.make("key-3"))

            async def refused() -> None:
                reason = "accepted"
                try:
                    await c.get(UNUSED_JOB)
                except UnauthenticatedError as err:
                    reason = err.reason
                except JobNotFoundError:
                    pass
                assert reason == "JWT_KEY_UNKNOWN"

            await assert_eventually(refused, within=10)


async def test_an_executor_stream_ends_when_its_token_expires(db: Database, tmp_path: Path) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", KEY)
    async with serving(
        db, auth="required", jwt=settings(str(jwks), leeway=0), auth_cache_seconds=0.3
    ) as server:
        executor = Executor(
            [server.address],
            name="short-lived",
            capacity=1,
            registry=builtin_registry(),
            token=KEY.token(["alpha:executor"], ttl=3),
        )
        await executor.start()
        try:
            await asyncio.wait_for(executor.wait_registered(), 20)
            [session] = server.dispatcher.sessions.values()
            assert session.credential_expires_at is not None

            async def ended() -> None:
                assert server.revocations.ended >= 1
                assert server.dispatcher.sessions == {}  # and its reconnect is refused

            await assert_eventually(ended, within=15)
            assert session.ended is not None
            assert session.ended.reason == "CREDENTIAL_EXPIRED"
        finally:
            await executor.stop(1.0)


async def test_a_recently_verified_token_passes_the_failed_authentication_gate(
    db: Database, tmp_path: Path
) -> None:
    """The gate refuses a host that failed authentication too often before any check, except
    for a credential verified lately: a JWT as well as an API key."""
    jwks = write_jwks(tmp_path / "jwks.json", KEY)
    policy = RateLimitPolicy.parse(["unauthenticated=0.1/3"])  # the next token 10 s away
    async with serving(db, auth="required", jwt=settings(str(jwks)), rate_limits=policy) as server:
        good = KEY.token(["default:viewer"])
        async with client(server, good) as c:
            with pytest.raises(JobNotFoundError):
                await c.status(UNUSED_JOB)  # verified, and cached
        refused = [await submit_raw(server, OTHER.token(["default:viewer"])) for _ in range(4)]
        assert [e.code() for e in refused] == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [
            grpc.StatusCode.RESOURCE_EXHAUSTED
        ]
        # An unverified token from this host is now refused at the gate, the verified one not.
        fresh = await submit_raw(server, KEY.token(["default:submitter"]))
        assert fresh.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        async with client(server, good) as c:
            with pytest.raises(JobNotFoundError):
                await c.status(UNUSED_JOB)
