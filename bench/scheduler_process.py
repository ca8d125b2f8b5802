"""The scheduler under test, in its own process so that the client load does not share its event
loop. Its stdout (JSON logs, one access-log line per RPC) goes to a file, never a pipe that could
fill up; the file is polled for the line announcing the listening address."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LISTENING_EVENT = "scheduler.listening"
LOG_LEVEL = "INFO"  # the production default; WARNING would also hide the listening line
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class SchedulerProcess:
    process: subprocess.Popen[bytes]
    address: str
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


def scheduler_command(database_url: str) -> list[str]:
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
    ]


def _listening_address(log_path: Path) -> str | None:
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == LISTENING_EVENT:
                return str(record["address"])
    return None


def _log_tail(log_path: Path, lines: int = 20) -> str:
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


def _wait_until_listening(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        address = _listening_address(log_path)
        if address is not None:
            return address
        if process.poll() is not None:
            raise RuntimeError(
                f"the scheduler exited with {process.returncode} before listening:\n"
                + _log_tail(log_path)
            )
        time.sleep(0.05)
    raise RuntimeError(f"the scheduler did not listen within {START_TIMEOUT:.0f} s")


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_scheduler(database_url: str) -> Iterator[SchedulerProcess]:
    """Start `python -m scheduler` on a free port; SIGTERM it (and wait) on exit."""
    with tempfile.TemporaryDirectory(prefix="jobsched-bench-log-") as tmp:
        log_path = Path(tmp) / "scheduler.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                scheduler_command(database_url),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            address = _wait_until_listening(process, log_path)
            yield SchedulerProcess(process, address, log_path)
        finally:
            _terminate(process)
