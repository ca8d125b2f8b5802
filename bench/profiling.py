"""`--profile DIR`: py-spy recordings of the processes under test during a measurement.

py-spy (`pip install py-spy`, not a dependency of jobsched) samples a running Python process
from outside at 100 Hz without pausing it (--nonblocking) and writes collapsed stacks (--format
raw: one line per distinct stack, frames separated by ";", then the sample count), which
speedscope.app and flamegraph.pl read. The recording stops when the process exits or after
`seconds`. `summary` reduces a recording to where the samples were spent, by the deepest frame
of a known library (grpc, SQLAlchemy, asyncpg, protobuf, logging, asyncio, epoll = idle) or
the project's own code.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.scheduler_process import Process

RATE = 100
_CATEGORIES = (
    ("selectors.py", "waiting in epoll (idle)"),
    ("threading.py", "grpc poller thread"),
    ("grpc", "grpc"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("greenlet", "SQLAlchemy"),
    ("asyncpg/", "asyncpg"),
    ("google/protobuf", "protobuf"),
    ("logging/", "logging"),
    ("jobsched/logs.py", "logging"),
    ("json/", "logging"),
    ("scheduler/", "scheduler code"),
    ("executor/", "executor code"),
    ("asyncio/", "asyncio (incl. socket writes)"),
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


@dataclass(frozen=True, slots=True)
class Recording:
    label: str
    path: Path
    process: subprocess.Popen[bytes]


def record(label: str, target: Process, directory: Path, seconds: float) -> Recording:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{label}.txt"
    command = [
        py_spy(),
        "record",
        "--pid",
        str(target.pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--nonblocking",
        "--output",
        str(path),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Recording(label, path, process)


async def finish(recordings: list[Recording]) -> None:
    """Wait for the recorders, which stop after their duration or with their process."""
    for recording in recordings:
        await asyncio.to_thread(recording.process.wait)


def _category(frame: str) -> str | None:
    for key, name in _CATEGORIES:
        if key in frame:
            return name
    return None


def summary(recording: Recording, top: int = 6) -> str:
    """One line, `label: 41% waiting in epoll (idle), 30% grpc, ... (N samples, path)`; empty
    without data."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    if not recording.path.exists():
        return ""
    for line in recording.path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        frames = stack.split(";")
        category = next(
            (c for c in (_category(f) for f in reversed(frames)) if c is not None), "other"
        )
        counts[category] += int(samples)
        total += int(samples)
    if not total:
        return ""
    shares = ", ".join(f"{100 * n / total:.0f}% {c}" for c, n in counts.most_common(top))
    return f"{recording.label}: {shares} ({total} samples, {recording.path})"
