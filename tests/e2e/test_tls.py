"""TLS and mutual TLS between schedulers and their clients, with certificates made by the test
(trustme): a TLS scheduler serves clients that trust its CA and nobody else (not plaintext, not
another CA); with --tls-client-ca it also requires a client certificate from that CA; the
executor, the CLI and both Python clients connect over it; new certificates are taken for new
connections (file change, reload_tls / SIGHUP) while open streams stay; a broken pair is refused
and the old one kept."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from executor.handlers import JobContext, builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient
from jobsched.errors import UnavailableError
from jobsched.sync_client import Client
from jobsched.tls import ClientTLS
from jobsched.v1 import job_pb2
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from scheduler.tls import ServerTLS
from tests.cli import JOBSCHED
from tests.faults.harness import free_port
from tests.helpers import assert_eventually
from tests.scripted import serving


@dataclass(frozen=True)
class Authority:
    """A CA with one server certificate (127.0.0.1, localhost) and one client certificate."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path, name: str) -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA(organization_name=name)
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert(f"executor@{name}.example")
        paths = cls(
            ca=directory / f"{name}-ca.pem",
            cert=directory / f"{name}-server.pem",
            key=directory / f"{name}-server.key",
            client_cert=directory / f"{name}-client.pem",
            client_key=directory / f"{name}-client.key",
        )
        ca.cert_pem.write_to_path(paths.ca)
        server.cert_chain_pems[0].write_to_path(paths.cert)
        for pem in server.cert_chain_pems[1:]:
            pem.write_to_path(paths.cert, append=True)
        server.private_key_pem.write_to_path(paths.key)
        client.cert_chain_pems[0].write_to_path(paths.client_cert)
        client.private_key_pem.write_to_path(paths.client_key)
        return paths

    def trust(self, *, with_client_cert: bool = False) -> ClientTLS:
        if with_client_cert:
            return ClientTLS(ca=self.ca, cert=self.client_cert, key=self.client_key)
        return ClientTLS(ca=self.ca)


@pytest.fixture
def first(tmp_path: Path) -> Authority:
    return Authority.make(tmp_path / "first", "first")


@pytest.fixture
def second(tmp_path: Path) -> Authority:
    return Authority.make(tmp_path / "second", "second")


async def reachable(address: str, tls: ClientTLS | None) -> bool:
    async with JobschedClient(address, tls=tls, timeout=3, retries=0) as client:
        try:
            await client.health()
        except UnavailableError:
            return False
        return True


@pytest.fixture
async def tls_server(db: Database, first: Authority) -> AsyncIterator[SchedulerServer]:
    async with serving(db, tls=ServerTLS(first.cert, first.key)) as server:
        yield server


async def test_a_tls_scheduler_serves_only_clients_that_trust_it(
    tls_server: SchedulerServer, first: Authority, second: Authority
) -> None:
    assert await reachable(tls_server.address, first.trust())
    assert not await reachable(tls_server.address, None)  # plaintext against TLS
    assert not await reachable(tls_server.address, second.trust())  # another CA
    async with JobschedClient(tls_server.address, tls=first.trust(), timeout=10) as client:
        job = await client.submit("noop")
        assert (await client.get(job.id)).id == job.id


async def test_mutual_tls_requires_a_client_certificate_from_its_ca(
    db: Database, first: Authority, second: Authority
) -> None:
    mtls = ServerTLS(first.cert, first.key, client_ca=first.ca)
    async with serving(db, tls=mtls) as server:
        assert not await reachable(server.address, first.trust())  # no client certificate
        foreign = ClientTLS(ca=first.ca, cert=second.client_cert, key=second.client_key)
        assert not await reachable(server.address, foreign)  # one from another CA
        assert await reachable(server.address, first.trust(with_client_cert=True))

        # The executor and both clients connect with their certificate; a job runs.
        tls = first.trust(with_client_cert=True)
        executor = Executor(
            [server.address], name="mtls", capacity=2, registry=builtin_registry(), tls=tls
        )
        await executor.start()
        try:
            await asyncio.wait_for(executor.wait_registered(), 20)

            def script() -> object:
                with Client(server.address, tls=tls, timeout=10) as client:
                    return client.submit("sleep", {"seconds": 0.1}).wait(timeout=20)

            assert await asyncio.to_thread(script) == {"slept": 0.1}
        finally:
            await executor.stop(1.0)


async def test_the_cli_takes_tls_options_and_their_environment(
    tls_server: SchedulerServer, first: Authority
) -> None:
    def jobsched(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBSCHED_")}
        return subprocess.run(
            [JOBSCHED, "--address", tls_server.address, *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**clean, **env},
        )

    by_flag = await asyncio.to_thread(jobsched, "--tls-ca", str(first.ca), "health")
    assert by_flag.returncode == 0, by_flag.stderr
    assert "SERVING" in by_flag.stdout
    by_env = await asyncio.to_thread(jobsched, "health", JOBSCHED_TLS_CA=str(first.ca))
    assert by_env.returncode == 0, by_env.stderr
    plain = await asyncio.to_thread(jobsched, "health")
    assert plain.returncode == 5  # unreachable without TLS
    missing = await asyncio.to_thread(jobsched, "--tls-ca", "/nonexistent/ca.pem", "health")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "jobsched: --tls-ca /nonexistent/ca.pem: no such file"


def replace(target: Path, source: Path) -> None:
    """Overwrite `target` with `source`'s content, keeping `target`'s modification time (so
    that only an explicit reload, not the file watch, can notice)."""
    stat = target.stat()
    target.write_bytes(source.read_bytes())
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))


async def test_new_certificates_reach_new_connections_and_streams_stay(
    db: Database, tmp_path: Path, first: Authority, second: Authority
) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    async with serving(db, tls=ServerTLS(cert, key)) as server:
        executor = Executor(
            [server.address], name="stays", capacity=2, registry=builtin_registry(),
            tls=first.trust(),
        )  # fmt: skip
        await executor.start()
        try:
            await asyncio.wait_for(executor.wait_registered(), 20)
            session = executor.session_id

            # Same mtime: unseen until reload_tls() (what SIGHUP calls).
            replace(cert, second.cert)
            replace(key, second.key)
            assert await reachable(server.address, first.trust())
            server.reload_tls()
            assert await reachable(server.address, second.trust())
            assert not await reachable(server.address, first.trust())

            # A broken pair is refused; the second stays in use.
            cert.write_text("not a certificate")
            server.reload_tls()
            assert await reachable(server.address, second.trust())
            assert server.tls is not None
            assert server.tls.reloads == 1

            # The executor's stream, opened under the first certificate, is the same session
            # and still runs jobs.
            assert executor.session_id == session
            async with JobschedClient(server.address, tls=second.trust(), timeout=10) as client:
                job = await client.submit("noop")

                async def succeeded() -> None:
                    assert (await client.get(job.id)).state == job_pb2.JOB_STATE_SUCCEEDED

                await assert_eventually(succeeded, within=20)
        finally:
            await executor.stop(1.0)


async def test_changed_files_are_taken_without_a_signal(
    db: Database, tmp_path: Path, first: Authority, second: Authority
) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    async with serving(db, tls=ServerTLS(cert, key)) as server:
        assert await reachable(server.address, first.trust())
        # Rotated the way cert-manager or a mounted Secret does: new files, new times.
        for target, source in ((cert, second.cert), (key, second.key)):
            target.write_bytes(source.read_bytes())
            later = target.stat().st_mtime_ns + 1_000_000_000
            os.utime(target, ns=(later, later))
        assert await reachable(server.address, second.trust())
        assert not await reachable(server.address, first.trust())


@pytest.mark.timeout(90)
async def test_the_scheduler_process_reloads_on_sighup(
    database_url: str, tmp_path: Path, first: Authority, second: Authority
) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    address = f"127.0.0.1:{free_port()}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduler", "--listen", address, "--database-url", database_url,
        "--no-migrate", "--tls-cert", str(cert), "--tls-key", str(key),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def serving_tls() -> None:
            assert await reachable(address, first.trust())

        await assert_eventually(serving_tls, within=30)
        replace(cert, second.cert)
        replace(key, second.key)
        process.send_signal(signal.SIGHUP)

        async def reloaded() -> None:
            assert await reachable(address, second.trust())

        await assert_eventually(reloaded, within=15)
        assert process.returncode is None  # SIGHUP reloads; it does not stop the scheduler
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--tls-cert", "CERT"], "TLS needs both --tls-cert and --tls-key"),
        (["--tls-client-ca", "CA"], "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--tls-cert", "CERT", "--tls-key", "CA"], "are not a certificate and its key"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "KEY"], "/nonexistent.pem: no such file"),
    ],
)
def test_unusable_tls_flags_stop_the_scheduler_with_one_line(
    first: Authority, argv: list[str], expected: str
) -> None:
    names = {"CERT": first.cert, "KEY": first.key, "CA": first.ca}
    argv = [str(names.get(a, a)) for a in argv]
    result = subprocess.run(
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
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert expected in line


async def test_an_executor_uploads_artifacts_over_tls(
    tls_server: SchedulerServer, first: Authority
) -> None:
    async def produce(ctx: JobContext) -> dict[str, bool]:
        await ctx.upload("out.txt", b"over TLS\n")
        return {"ok": True}

    executor = Executor(
        [tls_server.address],
        name="tls-uploader",
        capacity=1,
        registry=builtin_registry(extra=[("produce", produce)]),
        tls=first.trust(),
    )
    await executor.start()
    try:
        await asyncio.wait_for(executor.wait_registered(), 20)
        async with JobschedClient(tls_server.address, tls=first.trust(), timeout=10) as client:
            job = await client.submit("produce")

            async def done() -> None:
                assert (await client.get(job.id)).state == job_pb2.JOB_STATE_SUCCEEDED

            await assert_eventually(done, within=20)
            assert [a.name for a in await client.list_artifacts(job.id)] == ["out.txt"]
    finally:
        await executor.stop(1.0)
