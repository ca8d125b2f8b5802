"""Artifacts end to end: real executors upload over ArtifactService, into PostgreSQL or into a
real S3-compatible server (moto on loopback); clients list and download them with the checksum
checked; limits, refused uploads, deletion and retention."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from executor.handlers import Handler, JobContext, builtin_registry
from executor.runner import Executor
from jobsched.artifacts import upload_requests
from jobsched.client import JobschedClient
from jobsched.errors import JobNotFoundError, JobschedError
from jobsched.v1 import artifact_service_pb2 as apb
from jobsched.v1 import artifact_service_pb2_grpc, job_pb2
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store.database import Database
from tests.cli import cli_ok, run_cli
from tests.helpers import assert_eventually
from tests.s3 import S3Server, s3_server  # noqa: F401 (fixture)

MiB = 1024 * 1024

Start = Callable[..., Awaitable[tuple[SchedulerServer, JobschedClient, S3Server | None]]]


@pytest.fixture
async def cluster(
    db: Database, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """start(handlers, store="postgres"|"s3", **settings): a scheduler, an executor running
    `handlers`, a client; the S3 server when store="s3"."""
    servers: list[SchedulerServer] = []
    executors: list[Executor] = []
    clients: list[JobschedClient] = []

    async def start(
        handlers: dict[str, Handler], store: str = "postgres", **settings: Any
    ) -> tuple[SchedulerServer, JobschedClient, S3Server | None, Executor]:
        s3: S3Server | None = None
        if store == "s3":
            s3 = request.getfixturevalue("s3_server")
            settings |= {
                "artifact_store": f"s3://{s3.bucket}/artifacts",
                "artifact_s3_endpoint": s3.endpoint,
            }
        server = SchedulerServer(
            db,
            ServerSettings(
                listen="127.0.0.1:0",
                shutdown_grace=1.0,
                reconnect_grace=timedelta(seconds=1),
                **settings,
            ),
        )
        await server.start()
        servers.append(server)
        executor = Executor(
            [server.address],
            name=f"artifacts-{len(executors)}",
            capacity=2,
            registry=builtin_registry(extra=handlers.items()),
        )
        await executor.start()
        executors.append(executor)
        await executor.wait_registered()
        client = JobschedClient(server.address, timeout=30)
        clients.append(client)
        return server, client, s3, executor

    yield start
    for executor in executors:
        await executor.stop(grace=1.0)
    for client in clients:
        await client.close()
    for server in servers:
        await server.stop()


async def finished(client: JobschedClient, job_id: str) -> job_pb2.Job:
    async def ended() -> job_pb2.Job:
        job = await client.get(job_id)
        assert job.state in (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_DEAD), job.state
        return job

    return await assert_eventually(ended, within=30)


async def count(db: Database, table: str) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


def make_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("store", ["postgres", "s3"])
async def test_round_trip(cluster: Any, db: Database, tmp_path: Path, store: str) -> None:
    big = make_file(tmp_path / "video.bin", 5 * MiB + 123)

    async def produce(ctx: JobContext) -> dict[str, Any]:
        note = await ctx.upload("notes.txt", b"hello artifacts\n")
        video = await ctx.upload("video.bin", tmp_path / "video.bin")
        return {"notes": note.sha256, "video": video.size_bytes}

    def produce_plain(ctx: JobContext) -> dict[str, Any]:
        report = ctx.upload_blocking("report.json", b'{"ok": true}', "application/json")
        return {"report": report.size_bytes}

    _, client, s3, _ = await cluster({"produce": produce, "plain": produce_plain}, store)
    job = await client.submit("produce")
    done = await finished(client, job.id)
    assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.last_error
    assert json.loads(done.result) == {
        "notes": hashlib.sha256(b"hello artifacts\n").hexdigest(),
        "video": len(big),
    }

    listed = await client.list_artifacts(job.id)
    assert [(a.name, a.size_bytes, a.content_type, a.attempt) for a in listed] == [
        ("notes.txt", 16, "text/plain", 1),
        ("video.bin", len(big), "application/octet-stream", 1),
    ]
    assert listed[1].sha256 == hashlib.sha256(big).hexdigest()

    target = tmp_path / "downloaded.bin"
    got = await client.download_artifact(job.id, "video.bin", target)
    assert got.sha256 == hashlib.sha256(big).hexdigest()
    assert target.read_bytes() == big
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]

    plain = await client.submit("plain")
    assert (await finished(client, plain.id)).state == job_pb2.JOB_STATE_SUCCEEDED
    [report] = await client.list_artifacts(plain.id)
    assert (report.name, report.content_type) == ("report.json", "application/json")
    with (tmp_path / "report.json").open("wb") as file:
        await client.download_artifact(plain.id, "report.json", file)
    assert (tmp_path / "report.json").read_bytes() == b'{"ok": true}'

    chunks = await count(db, "artifact_chunks")
    if s3 is None:
        assert chunks == 1 + 6 + 1  # 5 MiB + 123 bytes in 1 MiB chunks, two small ones
    else:
        assert chunks == 0
        assert len(s3.keys()) == 3
        assert all(key.startswith("artifacts/") for key in s3.keys())  # noqa: SIM118 (a method)
        assert await count(db, "artifact_deletions") == 0


@pytest.mark.parametrize("store", ["postgres", "s3"])
async def test_limits_refuse_and_store_nothing(cluster: Any, db: Database, store: str) -> None:
    async def produce(ctx: JobContext) -> dict[str, Any]:
        outcomes: dict[str, Any] = {}
        for name, size in (("huge", 2 * MiB), ("first", MiB), ("second", MiB)):
            try:
                await ctx.upload(name, b"x" * size)
                outcomes[name] = "stored"
            except JobschedError as exc:
                outcomes[name] = [exc.code.name, exc.reason]
        return outcomes

    _, client, s3, _ = await cluster(
        {"produce": produce},
        store,
        max_artifact_bytes=MiB + MiB // 2,
        max_job_artifact_bytes=MiB + MiB // 2,
    )
    job = await client.submit("produce")
    done = await finished(client, job.id)
    assert json.loads(done.result) == {
        "huge": ["RESOURCE_EXHAUSTED", "ARTIFACT_TOO_LARGE"],
        "first": "stored",
        "second": ["RESOURCE_EXHAUSTED", "JOB_ARTIFACTS_TOO_LARGE"],
    }
    assert [a.name for a in await client.list_artifacts(job.id)] == ["first"]
    assert await count(db, "artifacts") == 1
    if s3 is None:
        assert await count(db, "artifact_chunks") == 1
    else:
        assert len(s3.keys()) == 1


async def test_uploads_refused_for_other_attempts_sessions_and_bad_input(
    cluster: Any, db: Database
) -> None:
    import asyncio

    release = asyncio.Event()

    async def hold(ctx: JobContext) -> None:
        await release.wait()

    server, client, _, executor = await cluster({"hold": hold})
    job = await client.submit("hold")
    await assert_eventually(lambda: _running(client, job.id), within=15)
    token = executor._stream.session_token
    assert token

    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = artifact_service_pb2_grpc.ArtifactServiceStub(channel)

        async def upload(data: bytes = b"data", **header: Any) -> apb.UploadArtifactResponse:
            fields = {
                "job_id": job.id,
                "attempt": 1,
                "executor": executor.name,
                "session_token": token,
                "name": "out.txt",
            } | header
            return await stub.UploadArtifact(
                upload_requests(apb.UploadArtifactHeader(**fields), data)
            )

        refused: list[dict[str, Any]] = [
            {"attempt": 2},  # not the running attempt
            {"executor": "someone-else"},  # the token is not that executor's
            {"session_token": token[:-2] + "xx"},  # a forged token
        ]
        for header in refused:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await upload(**header)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, header

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await upload(name=" bad\x00name")
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "header.name" in (caught.value.details() or "")

        async def wrong_checksum() -> AsyncIterator[apb.UploadArtifactRequest]:
            yield apb.UploadArtifactRequest(
                header=apb.UploadArtifactHeader(
                    job_id=job.id,
                    attempt=1,
                    executor=executor.name,
                    session_token=token,
                    name="out.txt",
                )
            )
            yield apb.UploadArtifactRequest(chunk=b"data")
            yield apb.UploadArtifactRequest(finish=apb.UploadArtifactFinish(sha256="0" * 64))

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UploadArtifact(wrong_checksum())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "finish.sha256" in (caught.value.details() or "")
        assert await count(db, "artifacts") == 0

        stored = await upload()
        assert stored.artifact.size_bytes == 4
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await upload()  # the same attempt, the same name
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS

        release.set()
        assert (await finished(client, job.id)).state == job_pb2.JOB_STATE_SUCCEEDED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await upload(name="late.txt")  # the attempt is over
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [a.name for a in await client.list_artifacts(job.id)] == ["out.txt"]


async def _running(client: JobschedClient, job_id: str) -> None:
    assert (await client.get(job_id)).state == job_pb2.JOB_STATE_RUNNING


@pytest.mark.parametrize("store", ["postgres", "s3"])
async def test_deleting_a_job_and_retention_remove_its_artifacts(
    cluster: Any, db: Database, store: str
) -> None:
    async def produce(ctx: JobContext) -> None:
        await ctx.upload("a.bin", os.urandom(3 * MiB))

    # A retention of a microsecond: every finished job is past it at the next sweep.
    server, client, s3, _ = await cluster(
        {"produce": produce}, store, retention=timedelta(microseconds=1)
    )
    await server.retention.stop()  # swept by hand below
    await client.set_queue_retention("keep", timedelta(0))  # forever
    deleted = await client.submit("produce")
    swept = await client.submit("produce")
    kept = await client.submit("produce", queue="keep")
    for job in (deleted, swept, kept):
        assert (await finished(client, job.id)).state == job_pb2.JOB_STATE_SUCCEEDED
    assert await count(db, "artifacts") == 3
    if s3 is not None:
        assert len(s3.keys()) == 3

    await client.delete(deleted.id)
    with pytest.raises(JobNotFoundError):
        await client.list_artifacts(deleted.id)
    await assert_eventually(lambda: _leads(server), within=15)
    assert await server.retention.sweep() == 1
    with pytest.raises(JobNotFoundError):
        await client.list_artifacts(swept.id)

    [left] = await client.list_artifacts(kept.id)
    assert await count(db, "artifacts") == 1
    if s3 is None:
        assert await count(db, "artifact_chunks") == 3  # the kept job's 3 MiB
        return
    # The objects go too: the trigger recorded their keys, the leader's janitor deletes them.
    assert await count(db, "artifact_deletions") == 2
    janitor = server.artifact_janitor
    assert janitor is not None
    janitor.wake()

    async def objects_gone() -> None:
        assert len(s3.keys()) == 1
        assert await count(db, "artifact_deletions") == 0

    await assert_eventually(objects_gone, within=15)
    assert janitor.deleted_total == 2
    path = Path(os.environ.get("TMPDIR", "/tmp"))  # the kept one still downloads
    got = await client.download_artifact(kept.id, "a.bin", path / f"kept-{kept.id}.bin")
    assert got.sha256 == left.sha256
    (path / f"kept-{kept.id}.bin").unlink()


async def _leads(server: SchedulerServer) -> None:
    assert server.leader.is_leader


async def test_cli_ls_and_get(cluster: Any, tmp_path: Path) -> None:
    data = os.urandom(2 * MiB + 5)

    async def produce(ctx: JobContext) -> None:
        await ctx.upload("data.bin", data)
        await ctx.upload("readme.md", b"# hi\n")

    server, client, _, _ = await cluster({"produce": produce})
    job = await client.submit("produce")
    await finished(client, job.id)

    listed = json.loads(await cli_ok(server.address, "artifacts", "ls", job.id, "--json"))
    assert [(a["name"], a["size_bytes"], a["attempt"]) for a in listed] == [
        ("data.bin", len(data), 1),
        ("readme.md", 5, 1),
    ]
    assert listed[0]["sha256"] == hashlib.sha256(data).hexdigest()
    table = await cli_ok(server.address, "artifacts", "ls", job.id)
    assert "data.bin" in table
    assert hashlib.sha256(data).hexdigest() in table

    out = tmp_path / "out.bin"
    await cli_ok(server.address, "artifacts", "get", job.id, "data.bin", "-o", str(out))
    assert out.read_bytes() == data

    code, _, err = await run_cli(
        server.address, "artifacts", "get", job.id, "missing", "-o", str(tmp_path / "x")
    )
    assert code != 0
    assert "missing" in err
    assert not (tmp_path / "x").exists()
