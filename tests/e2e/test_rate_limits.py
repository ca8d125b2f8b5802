"""Rate and stream limits per principal against a real scheduler (`--auth required`) and a real
PostgreSQL: one key flooding is refused RESOURCE_EXHAUSTED (RATE_LIMITED, with a RetryInfo)
while another key's calls all succeed and the leader keeps renewing on time; each key holds at
most its role's streams (watchers, executor connections), refused TOO_MANY_STREAMS past it;
with authentication off, callers are limited per peer address when `anonymous` has a limit."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from jobsched.client import JobschedClient
from jobsched.errors import OverloadedError
from jobsched.v1 import (
    executor_service_pb2,
    executor_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)
from scheduler.domain.auth import new_key
from scheduler.domain.rate_limits import RateLimitPolicy
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.e2e.test_overload import details_of, outcome
from tests.helpers import assert_eventually
from tests.scripted import serving

ADMIN = new_key()
RATE, BURST = 20, 20


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def make(server: SchedulerServer, role: str) -> str:
    async with JobschedClient(server.address, token=ADMIN, timeout=10) as admin:
        _, secret = await admin.create_api_key(f"{role} {new_key()[-6:]}", role, ["default"])
    return secret


@pytest.fixture
async def server(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(
        db,
        auth="required",
        bootstrap_key=ADMIN,
        rate_limits=RateLimitPolicy.parse(
            [f"submitter={RATE}/{BURST}"], stream_limits=["viewer=2", "executor=1"]
        ),
        leader_tick=0.5,
        leader_renew_timeout=2.0,
    ) as s:
        yield s


@pytest.mark.timeout(90)
async def test_a_flooding_key_is_refused_while_another_key_and_the_leader_carry_on(
    server: SchedulerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobsched.rpc")
    flooder, other = await make(server, "submitter"), await make(server, "submitter")
    await assert_eventually(lambda: _true(server.leader.is_leader), within=10)
    elector = server.leader
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        job = (
            await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="noop")),
                metadata=bearer(other),
            )
        ).job
        request = job_service_pb2.GetJobStatusRequest(id=job.id)

        # The leader's renewals, sampled all through the flood.
        answers: list[float] = []
        not_leading: list[float] = []
        flooding = True

        async def watch_leader() -> None:
            while flooding:
                if not elector.is_leader:
                    not_leading.append(time.monotonic())
                if not answers or elector.answered_at != answers[-1]:
                    answers.append(elector.answered_at)
                await asyncio.sleep(0.02)

        async def flood() -> list[Any]:
            results: list[Any] = []
            for _ in range(10):  # 10 waves of 100 concurrent calls: far past 20/s
                results += await asyncio.gather(
                    *(
                        outcome(stub.GetJobStatus(request, metadata=bearer(flooder)))
                        for _ in range(100)
                    )
                )
            return results

        async def behave() -> list[Any]:
            results = []
            for _ in range(BURST // 2):  # well within its own bucket
                results.append(await outcome(stub.GetJobStatus(request, metadata=bearer(other))))
                await asyncio.sleep(0.05)
            return results

        sampler = asyncio.create_task(watch_leader())
        started = time.monotonic()
        flooded, behaved = await asyncio.gather(flood(), behave())
        elapsed = time.monotonic() - started
        flooding = False
        await sampler

    assert behaved == [grpc.StatusCode.OK] * (BURST // 2)
    refused = [r for r in flooded if isinstance(r, grpc.aio.AioRpcError)]
    allowed = flooded.count(grpc.StatusCode.OK)
    assert len(refused) + allowed == len(flooded)
    assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    for err in refused[:50]:
        reason, delay = details_of(err)
        assert reason == "RATE_LIMITED"
        assert 0 < delay <= 1 / RATE + 0.001
    # The burst, and what the bucket refilled while the flood lasted (and a little slack).
    assert allowed <= BURST + RATE * elapsed + 5, (allowed, elapsed)
    assert len(refused) >= len(flooded) // 2
    assert server.rate_limiter.refused_calls == len(refused)
    # The leader never stopped leading: it renewed (every ~0.67 s) well within its renew
    # timeout (2 s) all through the flood, on a machine as loaded as it may be.
    assert not_leading == []
    gaps = [b - a for a, b in itertools.pairwise(answers)]
    assert len(gaps) >= elapsed / elector.renew_timeout, (gaps, elapsed)
    assert max(gaps) < elector.renew_timeout, gaps
    # One warning for the flood (at most one per 10 s), naming the key by id, never its secret.
    warnings = [
        r for r in caplog.records if getattr(r, "fields", {}).get("event") == "rpc.rate_limited"
    ]
    assert 1 <= len(warnings) <= 2
    assert warnings[0].fields["caller"].startswith("api_key:")  # type: ignore[attr-defined]
    assert flooder not in caplog.text


async def _true(value: bool) -> None:
    assert value


async def test_the_client_reads_a_rate_limit_as_overloaded_with_its_delay(
    server: SchedulerServer,
) -> None:
    async with JobschedClient(
        server.address, token=await make(server, "submitter"), timeout=10, retries=0
    ) as c:
        job = await c.submit("noop")
        # Three bursts at once: most find the bucket empty, however slow the machine.
        results = await asyncio.gather(
            *(c.get(job.id) for _ in range(3 * BURST)), return_exceptions=True
        )
    refused = [r for r in results if isinstance(r, OverloadedError)]
    assert len(refused) + sum(isinstance(r, job_pb2.Job) for r in results) == 3 * BURST
    assert len(refused) >= BURST // 2
    assert {r.reason for r in refused} == {"RATE_LIMITED"}
    assert all(0 < r.retry_after <= 1 for r in refused)


async def test_each_key_holds_at_most_its_roles_streams(server: SchedulerServer) -> None:
    first, second = await make(server, "viewer"), await make(server, "viewer")
    submitter = await make(server, "submitter")
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub: Any = job_service_pb2_grpc.JobServiceStub(channel)
        job = (
            await stub.SubmitJob(
                job_service_pb2.SubmitJobRequest(job=job_pb2.JobSpec(type="noop")),
                metadata=bearer(submitter),
            )
        ).job
        watch = job_service_pb2.WatchJobRequest(id=job.id)
        held = [stub.WatchJob(watch, metadata=bearer(first)) for _ in range(2)]
        for call in held:
            assert (await call.read()).HasField("snapshot")
        third = stub.WatchJobs(job_service_pb2.WatchJobsRequest(), metadata=bearer(first))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await third.read()
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details_of(raised.value)[0] == "TOO_MANY_STREAMS"
        assert details_of(raised.value)[1] == 1.0
        # Another key of the same role has slots of its own; unary calls are not streams.
        other = stub.WatchJob(watch, metadata=bearer(second))
        assert (await other.read()).HasField("snapshot")
        await stub.GetJobStatus(
            job_service_pb2.GetJobStatusRequest(id=job.id), metadata=bearer(first)
        )
        # A closed stream gives its slot back.
        held[0].cancel()

        async def reopened() -> None:
            again = stub.WatchJob(watch, metadata=bearer(first))
            try:
                assert (await again.read()).HasField("snapshot")
            except grpc.aio.AioRpcError as err:
                raise AssertionError(err.code()) from err
            held.append(again)

        await assert_eventually(reopened, within=10, interval=0.1)
        for call in [*held, other]:
            call.cancel()
    assert server.rate_limiter.refused_streams >= 1
    await assert_eventually(lambda: _true(server.rate_limiter.streams == {}), within=10)


async def test_an_executor_key_holds_at_most_its_connect_streams(server: SchedulerServer) -> None:
    key = await make(server, "executor")
    register = executor_service_pb2.ConnectRequest(
        register=executor_service_pb2.Register(name="one", capacity=1, job_types=["noop"])
    )
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub: Any = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        outgoing: asyncio.Queue[Any] = asyncio.Queue()

        async def requests() -> AsyncIterator[Any]:
            yield register
            while (message := await outgoing.get()) is not None:
                yield message

        first = stub.Connect(requests(), metadata=bearer(key))
        assert (await first.read()).HasField("registered")
        second = stub.Connect(
            iter(
                [
                    executor_service_pb2.ConnectRequest(
                        register=executor_service_pb2.Register(
                            name="two", capacity=1, job_types=["noop"]
                        )
                    )
                ]
            ),
            metadata=bearer(key),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await second.read()
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details_of(raised.value)[0] == "TOO_MANY_STREAMS"
        assert [s.name for s in server.dispatcher.sessions.values()] == ["one"]
        outgoing.put_nowait(None)
        first.cancel()


async def test_with_auth_off_callers_are_limited_per_peer_when_anonymous_has_a_limit(
    db: Database,
) -> None:
    policy = RateLimitPolicy.parse(["anonymous=0.1/5"])
    async with (
        serving(db, rate_limits=policy) as server,
        grpc.aio.insecure_channel(server.address) as a,
        grpc.aio.insecure_channel(server.address) as b,
    ):
        stubs = [job_service_pb2_grpc.JobServiceStub(a), job_service_pb2_grpc.JobServiceStub(b)]
        request = job_service_pb2.GetJobStatusRequest(id="7d3a1c7e-0000-4000-8000-000000000000")
        # Two connections from one host share its bucket: 5 calls, then refused (the next
        # token is 10 s away).
        results = [await outcome(stubs[i % 2].GetJobStatus(request)) for i in range(8)]
        codes = [r if isinstance(r, grpc.StatusCode) else r.code() for r in results]
        assert codes[:5] == [grpc.StatusCode.NOT_FOUND] * 5
        assert codes[5:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
        assert server.rate_limiter.refused_calls == 3


async def test_a_host_guessing_keys_is_refused_before_any_lookup(db: Database) -> None:
    policy = RateLimitPolicy.parse(["unauthenticated=0.1/5"])  # the next token 10 s away
    async with serving(
        db, auth="required", bootstrap_key=ADMIN, rate_limits=policy, auth_cache_seconds=60
    ) as server:
        good = await make(server, "viewer")
        request = job_service_pb2.GetJobStatusRequest(id="7d3a1c7e-0000-4000-8000-000000000000")
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            assert await outcome(stub.GetJobStatus(request, metadata=bearer(good))) != (
                grpc.StatusCode.OK
            )  # NOT_FOUND: the key is verified (and cached)
            lookups = server.authenticator.lookups
            guesses = [
                await outcome(stub.GetJobStatus(request, metadata=bearer(new_key())))
                for _ in range(8)
            ]
            codes = [g.code() for g in guesses if isinstance(g, grpc.aio.AioRpcError)]
            assert (
                codes
                == [grpc.StatusCode.UNAUTHENTICATED] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
            )
            assert details_of(guesses[-1])[0] == "RATE_LIMITED"  # type: ignore[arg-type]
            assert server.authenticator.lookups == lookups + 5  # no query for the refused
            # Without a credential at all, the same.
            bare = await outcome(stub.GetJobStatus(request))
            assert isinstance(bare, grpc.aio.AioRpcError)
            assert bare.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # A key verified recently still gets through from the same host.
            ok = await outcome(stub.GetJobStatus(request, metadata=bearer(good)))
            assert isinstance(ok, grpc.aio.AioRpcError)
            assert ok.code() == grpc.StatusCode.NOT_FOUND
            # Health checks are never gated.
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest())).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
