"""The client against several replicas and lost responses: it moves on to the next address when
one is unavailable, repeats only what is safe to repeat, and a submit with an idempotency key
whose response was lost is retried into exactly one job."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from jobsched.client import JobschedClient, balancing
from jobsched.errors import UnavailableError
from scheduler.store.database import Database
from tests.faults.harness import free_port
from tests.scripted import serving


class LoseResponses(grpc.aio.ServerInterceptor):
    """The first `count` calls of `method` run to the end (their job is stored), then the client
    is told UNAVAILABLE, as when the connection drops before the response arrives."""

    def __init__(self, method: str, count: int = 1) -> None:
        self.method = method
        self.remaining = count
        self.lost = 0

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or details.method != self.method or handler.unary_unary is None:
            return handler
        inner: Any = handler.unary_unary

        async def lose(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            response = await inner(request, context)
            if self.remaining > 0:
                self.remaining -= 1
                self.lost += 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (injected)")
            return response

        return grpc.unary_unary_rpc_method_handler(
            lose,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def jobs_with_key(db: Database, key: str) -> int:
    async with db.read() as conn:
        result = await conn.execute(
            text("SELECT count(*) FROM jobs WHERE idempotency_key = :k"), {"k": key}
        )
        return int(result.scalar_one())


async def test_a_keyed_submit_whose_response_was_lost_is_retried_into_one_job(
    db: Database,
) -> None:
    fault = LoseResponses("/jobsched.v1.JobService/SubmitJob")
    async with (
        serving(db, interceptors=[fault]) as server,
        JobschedClient(server.address) as client,
    ):
        result = await client.submit_job({"type": "noop", "idempotency_key": "order-42"})
        assert fault.lost == 1  # the first response was lost after the job was stored
        assert not result.created  # the retry found it
        assert await jobs_with_key(db, "order-42") == 1


async def test_a_submit_without_a_key_is_not_repeated_after_a_lost_response(
    db: Database,
) -> None:
    fault = LoseResponses("/jobsched.v1.JobService/SubmitJob")
    async with (
        serving(db, interceptors=[fault]) as server,
        JobschedClient(server.address) as client,
    ):
        with pytest.raises(UnavailableError):
            await client.submit("noop")
        async with db.read() as conn:
            stored = (await conn.execute(text("SELECT count(*) FROM jobs"))).scalar_one()
        assert stored == 1  # stored once; repeating blindly would have made two


async def test_the_client_fails_over_to_the_next_replica(db: Database) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    async with serving(db) as server, JobschedClient([dead, server.address]) as client:
        job = await client.submit("noop", idempotency_key="k-1")  # retried on the live one
        assert client.address == server.address
        assert (await client.get(job.id)).id == job.id
        # Without a key a submit is not repeated, but the next call goes to the live replica.
        async with JobschedClient(f"{dead},{server.address}") as other:
            with pytest.raises(UnavailableError):
                await other.submit("noop")
            assert (await other.submit("noop")).id


async def test_a_dns_target_is_served_and_balanced_round_robin(db: Database) -> None:
    """`dns:///host:port` (a Kubernetes headless Service) is a target like any other, and its
    calls are spread over every address it resolves to rather than pinned to the first."""
    async with serving(db) as server:
        target = f"dns:///{server.address}"
        async with JobschedClient(target) as client:
            job = await client.submit("noop")
            assert (await client.get(job.id)).id == job.id
    assert balancing(target) == [("grpc.lb_policy_name", "round_robin")]
    assert balancing(server.address) == []  # one address: gRPC's default
