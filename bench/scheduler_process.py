"""The processes under test: `python -m scheduler` replicas and `python -m executor` executors,
each in its own process so that the load does not share their event loops.

Their stdout (JSON logs: one access-log line per RPC, two lines per job for an executor) goes to a
file, never a pipe that could fill up; a scheduler's file is polled for the line announcing its
listening address. Everything here is async so that the benchmark's own event loop (a proxy, an
in-process executor) keeps running while a process starts or stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LISTENING_EVENT = "scheduler.listening"
LOG_LEVEL = "INFO"  # the production default; WARNING would also hide the listening line
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
EXECUTOR_GRACE = 1.0  # seconds an executor's running jobs get when it is stopped


@dataclass(frozen=True, slots=True)
class Process:
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def memory_kib(self, field: str = "VmRSS") -> int:
        """A memory figure from /proc/<pid>/status (VmRSS: resident now; VmHWM: peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise RuntimeError(f"{field} not in /proc/{self.pid}/status")

    def rss_mb(self) -> float:
        """Resident memory now, in MB (10^6 bytes, the unit of the issue's target)."""
        return self.memory_kib("VmRSS") * 1024 / 1e6

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far (from /proc/<pid>/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)"
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class SchedulerProcess(Process):
    address: str


def scheduler_command(database_url: str, extra_args: Sequence[str] = ()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scheduler",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--no-migrate",
        "--log-level",
        LOG_LEVEL,
        *extra_args,
    ]


def executor_command(address: str, name: str, capacity: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "executor",
        "--scheduler",
        address,
        "--name",
        name,
        "--capacity",
        str(capacity),
        "--grace",
        str(EXECUTOR_GRACE),
        "--log-level",
        LOG_LEVEL,
    ]


def _listening_address(log_path: Path) -> str | None:
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == LISTENING_EVENT:
                return str(record["address"])
    return None


def log_tail(log_path: Path, lines: int = 20) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


async def _wait_until_listening(process: subprocess.Popen[bytes], log_path: Path) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT
    while loop.time() < deadline:
        address = _listening_address(log_path)
        if address is not None:
            return address
        if process.poll() is not None:
            raise RuntimeError(
                f"the scheduler exited with {process.returncode} before listening:\n"
                + log_tail(log_path)
            )
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the scheduler did not listen within {START_TIMEOUT:.0f} s")


async def _terminate(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM them all, wait for them together, SIGKILL whatever is left after STOP_TIMEOUT."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STOP_TIMEOUT
    while loop.time() < deadline:
        if all(p.poll() is not None for p in processes):
            break
        await asyncio.sleep(0.05)
    for process in processes:
        if process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.wait)


def _spawn(
    command: list[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=None if env is None else {**os.environ, **env},
        )


@contextlib.asynccontextmanager
async def running_scheduler(
    database_url: str,
    *,
    name: str = "scheduler",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[SchedulerProcess]:
    """Start `python -m scheduler` on a free port (`env`: more environment variables); SIGTERM
    it (and wait) on exit."""
    with tempfile.TemporaryDirectory(prefix="jobsched-bench-log-") as tmp:
        log_path = Path(tmp) / f"{name}.log"
        process = _spawn(scheduler_command(database_url, extra_args), log_path, env)
        try:
            address = await _wait_until_listening(process, log_path)
            yield SchedulerProcess(process, log_path, address)
        finally:
            await _terminate([process])


@contextlib.asynccontextmanager
async def running_schedulers(
    database_url: str,
    count: int,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[list[SchedulerProcess]]:
    """`count` scheduler replicas on the same database."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(
                running_scheduler(
                    database_url, name=f"scheduler-{i}", extra_args=extra_args, env=env
                )
            )
            for i in range(count)
        ]


@contextlib.asynccontextmanager
async def running_executors(
    addresses: Sequence[str],
    count: int,
    capacity: int,
    *,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[list[Process]]:
    """`count` `python -m executor` processes (built-in handlers), executor i connected to
    addresses[i % len(addresses)]: spread evenly over the replicas. Stopped together on exit."""
    with tempfile.TemporaryDirectory(prefix="jobsched-bench-log-") as tmp:
        executors: list[Process] = []
        try:
            for i in range(count):
                log_path = Path(tmp) / f"executor-{i}.log"
                command = executor_command(
                    addresses[i % len(addresses)], f"bench-executor-{i}", capacity
                )
                command += extra_args
                executors.append(Process(_spawn(command, log_path, env), log_path))
            yield executors
        finally:
            await _terminate([e.process for e in executors])
