"""What a result is attached to (commit, machine, command) and how it is shown: a table on the
terminal and a section appended to bench/RESULTS.md."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.stats import Figure

ROOT = Path(__file__).resolve().parents[1]
RESULTS_PATH = ROOT / "bench" / "RESULTS.md"

RESULTS_HEADER = """# Benchmark results

Appended by `make bench` (`python -m bench`; `--quick` for a smaller smoke run). Each section is one
run: when, on which commit ("-dirty": uncommitted changes) and machine, with what command, and the
median of each figure over the repetitions (every repetition's value in the last column), next to
the target of issue 6 it is judged against. The scheduler (and, for throughput, the executors) run
as subprocesses on a throw-away database; the load comes from another process. The machine is
shared: each section gives its load average and the whole machine's CPU during the throughput
runs. Compare runs only on the same machine. Older sections are history: never edit them.
"""


@dataclass(frozen=True, slots=True)
class RunContext:
    started: datetime
    mode: str
    commit: str
    command: str
    machine: str
    postgres: str
    database: str
    notes: list[str]


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _proc_value(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        return None
    return None


def machine_description() -> str:
    cpu = _proc_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = _proc_value("/proc/meminfo", "MemTotal")
    gib = f"{int(memory.split()[0]) / 2**20:.1f} GiB RAM" if memory else "unknown RAM"
    return f"{platform.platform()}; {cpu}; {cpus} CPUs (nproc); {gib}"


def load_average() -> str:
    """The 1-minute load average: other work on a shared machine skews every figure."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def invoked_command() -> str:
    """How this run was started, e.g. `.venv/bin/python -m bench --quick`."""
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):  # outside the working directory: keep it absolute
        python = python.relative_to(Path.cwd())
    return shlex.join([str(python), "-m", "bench", *sys.argv[1:]])


def format_value(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def table_rows(figures: list[Figure]) -> list[list[str]]:
    return [
        [
            f.measurement,
            f.name,
            f"{format_value(f.median)} {f.unit}",
            f.target.describe(f.unit) if f.target is not None else "",
            f.verdict,
            " / ".join(format_value(v) for v in f.runs),
        ]
        for f in figures
    ]


TABLE_HEADER = ["Measurement", "Figure", "Median", "Target (issue 6)", "Met?", "Runs"]


def terminal_table(figures: list[Figure]) -> str:
    rows = [TABLE_HEADER, *table_rows(figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(figures: list[Figure]) -> str:
    lines = [
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|---|---|--:|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in table_rows(figures)),
    ]
    return "\n".join(lines)


def results_section(context: RunContext, figures: list[Figure]) -> str:
    when = context.started.strftime("%Y-%m-%d %H:%M UTC")
    bullets = [
        f"- Commit: `{context.commit}`",
        f"- Command: `{context.command}`",
        f"- Machine: {context.machine}",
        f"- PostgreSQL: {context.postgres} ({context.database})",
        *(f"- {note}" for note in context.notes),
    ]
    return (
        f"## {when} ({context.mode} run)\n\n"
        + "\n".join(bullets)
        + "\n\n"
        + markdown_table(figures)
        + "\n"
    )


def append_results(section: str, path: Path = RESULTS_PATH) -> None:
    existing = path.read_text() if path.exists() else RESULTS_HEADER
    path.write_text(existing.rstrip("\n") + "\n\n" + section)
