"""The soak's fault scheduler: one fault at a time, chosen by a seeded random generator, each
undone after a while (a killed process is started again on the same address, a stopped one
continued, PostgreSQL started again, a cut link restored), then a pause. At least one scheduler
and one executor are always left untouched, so the system can make progress during each fault.

Each fault's recovery time is measured from the moment it is undone to the first probe job
(a noop submitted through every replica's address) that succeeds afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jobsched.client import JobschedClient
from jobsched.errors import JobschedError
from jobsched.v1 import job_pb2
from tests.faults.cuttable_proxy import CuttableProxy
from tests.faults.harness import Service, pg_ctl

KINDS = (
    "kill scheduler",
    "freeze scheduler",
    "kill executor",
    "freeze executor",
    "restart postgresql",
    "cut database link",
)


@dataclass(slots=True)
class Injected:
    kind: str
    target: str
    at: float  # seconds since the soak started
    held: float  # seconds the fault lasted
    recovery: float | None = None  # seconds from undoing it to the next probe job succeeding


@dataclass(slots=True)
class Postgres:
    data_dir: Path
    socket_dir: str

    def stop(self) -> None:
        """An immediate shutdown (what `pg_ctl stop -m immediate` sends: SIGQUIT to the
        postmaster), waited for until the postmaster is gone. Signalled directly: pg_ctl run
        from this process (gRPC's threads, a fork with setuid) was seen to die of SIGSEGV."""
        pid_file = self.data_dir / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL (pid {pid}) did not stop within 30 s")

    def start(self) -> None:
        for attempt in range(3):
            try:
                pg_ctl(
                    self.data_dir, "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                    "-l", str(self.data_dir / "restart.log"), "start",
                )  # fmt: skip
                return
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise
                time.sleep(1)


class FaultScheduler:
    def __init__(
        self,
        rng: random.Random,
        schedulers: Sequence[Service],
        executors: Sequence[Service],
        postgres: Postgres,
        proxy: CuttableProxy,
        client: JobschedClient,
        started: float,
    ) -> None:
        self.rng = rng
        self.schedulers = list(schedulers)
        self.executors = list(executors)
        self.postgres = postgres
        self.proxy = proxy
        self.client = client
        self.started = started
        self.injected: list[Injected] = []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.rng.uniform(2.0, 6.0))
            if stop.is_set():
                return
            kind = self.rng.choice(KINDS)
            held = self.rng.uniform(1.0, 4.0)
            fault = await self._inject(kind, held)
            self.injected.append(fault)
            fault.recovery = await self._probe()

    async def _inject(self, kind: str, held: float) -> Injected:
        at = time.monotonic() - self.started
        if kind in ("kill scheduler", "freeze scheduler"):
            target = self.rng.choice(self.schedulers)
            await self._process_fault(target, kill=kind.startswith("kill"), held=held)
            return Injected(kind, target.name, at, held)
        if kind in ("kill executor", "freeze executor"):
            target = self.rng.choice(self.executors)
            await self._process_fault(target, kill=kind.startswith("kill"), held=held)
            return Injected(kind, target.name, at, held)
        if kind == "restart postgresql":
            await asyncio.to_thread(self.postgres.stop)
            await asyncio.sleep(held)
            await asyncio.to_thread(self.postgres.start)
            return Injected(kind, "postgresql", at, held)
        await self.proxy.cut()
        await asyncio.sleep(held)
        await self.proxy.restore()
        return Injected(kind, "schedulers to postgresql", at, held)

    async def _process_fault(self, target: Service, *, kill: bool, held: float) -> None:
        if kill:
            target.signal(signal.SIGKILL)
            assert target.process is not None
            await target.process.wait()
            await asyncio.sleep(held)
            await target.start()
        else:
            target.signal(signal.SIGSTOP)
            await asyncio.sleep(held)
            target.signal(signal.SIGCONT)

    async def _probe(self, within: float = 60.0) -> float | None:
        """Seconds until a noop job submitted now succeeds (None: not within `within`)."""
        undone = time.monotonic()
        while time.monotonic() - undone < within:
            try:
                job = await self.client.submit("noop", labels={"soak": "probe"})
                while time.monotonic() - undone < within:
                    current = await self.client.get(job.id)
                    if current.state == job_pb2.JOB_STATE_SUCCEEDED:
                        return time.monotonic() - undone
                    await asyncio.sleep(0.1)
            except JobschedError:
                await asyncio.sleep(0.2)
        return None

    async def heal(self, ensure: Callable[[Service], Awaitable[None]]) -> None:
        """Leave every process running (continued, or started again)."""
        for service in [*self.schedulers, *self.executors]:
            with contextlib.suppress(ProcessLookupError):
                service.signal(signal.SIGCONT)
            await ensure(service)
