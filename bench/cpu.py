"""Where the CPU went during a measurement: the machine as a whole (/proc/stat), the processes
under test (Process.cpu_seconds) and the PostgreSQL server (its postmaster and every child,
exited ones included through the postmaster's cutime/cstime), as shares of one core."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from bench.scheduler_process import Process

_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot; idle and iowait are not busy."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on: index 1 is the ppid, 11-14 the CPU times."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu_seconds(postmaster: int) -> float:
    """CPU time of a PostgreSQL server so far: the postmaster, its reaped children and its
    live children (backends, checkpointer, walwriter, ...)."""
    fields = _stat_fields(postmaster)
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            child = _stat_fields(entry.name)
            if int(child[1]) == postmaster:
                ticks += int(child[11]) + int(child[12])
    return ticks / _TICKS


async def postmaster_pid(conn: asyncpg.Connection) -> int | None:
    """The server's postmaster, when it runs on this machine and /proc shows it (the parent of
    its checkpointer); None otherwise."""
    pid = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
    )
    if pid is None:
        return None
    try:
        parent = int(_stat_fields(int(pid))[1])
        server_cpu_seconds(parent)
    except (OSError, ValueError, IndexError):
        return None
    return parent


@dataclass(frozen=True, slots=True)
class CpuShares:
    """CPU used over a window, in % of one core (200 % = both cores of this machine)."""

    seconds: float  # the window's wall time
    machine: float
    processes: list[float]
    postgres: float | None


class CpuWindow:
    """Started before a measurement, read after it (while the processes still run)."""

    def __init__(self, processes: Sequence[Process], postgres: int | None = None) -> None:
        self.processes = list(processes)
        self.postgres = postgres
        self._cores = os.cpu_count() or 1  # /proc/stat counts every CPU of the machine
        self._wall = time.monotonic()
        self._machine = _machine_jiffies()
        self._process = [p.cpu_seconds() for p in self.processes]
        self._server = server_cpu_seconds(postgres) if postgres is not None else 0.0

    def read(self) -> CpuShares:
        wall = time.monotonic() - self._wall
        busy, total = _machine_jiffies()
        busy_share = (busy - self._machine[0]) / max(1, total - self._machine[1])
        server = None
        if self.postgres is not None:
            server = 100 * (server_cpu_seconds(self.postgres) - self._server) / wall
        return CpuShares(
            seconds=wall,
            machine=100 * busy_share * self._cores,
            processes=[
                100 * (p.cpu_seconds() - before) / wall
                for p, before in zip(self.processes, self._process, strict=True)
            ],
            postgres=server,
        )
