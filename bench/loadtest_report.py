"""The load test's report: one table per phase with its verdict against the success criteria,
charts (throughput, enqueue-to-start p50/p99 and queue depth over time, one PNG per phase, by
matplotlib without a display) in bench/loadtest/, and the section appended to bench/LOADTEST.md."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from pathlib import Path

from bench.loadtest import DRAIN_BOUND, Phase
from bench.report import ROOT, git_commit, load_average, machine_description

REPORT_PATH = ROOT / "bench" / "LOADTEST.md"
CHART_DIR = ROOT / "bench" / "loadtest"
MAX_ERROR_RATE = 0.01


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.1f}{unit}"


def verdict(phase: Phase) -> tuple[bool, list[str]]:
    problems = []
    if phase.lost:
        problems.append(f"{phase.lost} acknowledged jobs not succeeded")
    offered = phase.acknowledged + phase.errors
    if offered and phase.errors / offered >= MAX_ERROR_RATE:
        problems.append(f"submit errors {100 * phase.errors / offered:.2f} % (limit 1 %)")
    if phase.name == "burst" and (phase.drained_in is None or phase.drained_in > DRAIN_BOUND):
        problems.append(f"did not return to baseline within {DRAIN_BOUND:.0f} s")
    return not problems, problems


def chart(phase: Phase, stamp: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = [s.at for s in phase.seconds]
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    top.plot(at, [s.submitted for s in phase.seconds], label="submitted/s")
    top.plot(at, [s.finished for s in phase.seconds], label="finished/s")
    top.set_ylabel("jobs/s")
    top.legend(loc="upper right")
    for label, values in (
        ("p50", [s.p50_ms for s in phase.seconds]),
        ("p99", [s.p99_ms for s in phase.seconds]),
    ):
        middle.plot(at, [v if v is not None else float("nan") for v in values], label=label)
    middle.set_ylabel("enqueue to start, ms")
    middle.set_yscale("log")
    middle.legend(loc="upper right")
    bottom.plot(at, [s.depth for s in phase.seconds], label="QUEUED")
    bottom.set_ylabel("queue depth")
    bottom.set_xlabel("seconds")
    figure.suptitle(f"{phase.name}: {phase.rate:,.0f} jobs/s offered")
    figure.tight_layout()
    CHART_DIR.mkdir(parents=True, exist_ok=True)
    path = CHART_DIR / f"{stamp}-{phase.name}.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def render(
    capacity: float,
    phases: list[Phase],
    origin: str,
    minutes: float,
    wall: float,
    stamp: str | None,
) -> tuple[str, bool]:
    """The section, and whether every phase passed; charts are drawn only with a `stamp`."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {now}: load-test matrix, {minutes:g} min per phase",
        "",
        f"Machine: {machine_description()}; load average before {load_average()}. Commit "
        f"{git_commit()}. Command: `make loadtest LOADTEST_MINUTES={minutes:g}`. PostgreSQL: {origin}. "
        f"One scheduler, two executors of capacity 100, no-op jobs. Wall time {wall:.0f} s.",
        "",
        f"Capacity C (a queue of 20,000 drained): **{capacity:,.0f} jobs/s**.",
        "",
        "| phase | offered | finished/s (median) | e2s p50 | e2s p95 | e2s p99 | max depth "
        "| errors | lost | CPU sched / exec / pg (% core) | RSS sched (MB) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    passed_all = True
    for phase in phases:
        busy = [s for s in phase.seconds if s.submitted or s.finished]
        ok, problems = verdict(phase)
        passed_all &= ok
        cpu_sched = _median([s.cpu.get("scheduler", 0.0) for s in busy])
        cpu_exec = _median(
            [sum(v for k, v in s.cpu.items() if k.startswith("executor")) for s in busy]
        )
        cpu_pg = _median([s.cpu["postgresql"] for s in busy if "postgresql" in s.cpu])
        rss = max((s.rss_mb.get("scheduler", 0.0) for s in phase.seconds), default=0.0)
        lines.append(
            f"| {phase.name} | {phase.rate:,.0f}/s | "
            f"{_fmt(_median([float(s.finished) for s in busy]))} | "
            f"{_fmt(_median([s.p50_ms for s in busy if s.p50_ms is not None]), ' ms')} | "
            f"{_fmt(_median([s.p95_ms for s in busy if s.p95_ms is not None]), ' ms')} | "
            f"{_fmt(_median([s.p99_ms for s in busy if s.p99_ms is not None]), ' ms')} | "
            f"{max((s.depth for s in phase.seconds), default=0):,} | {phase.errors:,} | "
            f"{phase.lost:,} | {_fmt(cpu_sched)} / {_fmt(cpu_exec)} / {_fmt(cpu_pg)} | "
            f"{rss:.0f} | {'passed' if ok else 'FAILED: ' + '; '.join(problems)} |"
        )
    burst = phases[-1]
    lines += [
        "",
        "Latencies are medians over the phase's seconds of each second's percentile, from the "
        "job rows (started_at - created_at, both the scheduler's clock). Criteria: no "
        "acknowledged job lost, submit errors < 1 %, and after the burst (10 s at 2 C) the queue "
        f"back to the baseline's depth and the p99 within 2x the baseline's within "
        f"{DRAIN_BOUND:.0f} s: "
        + (
            "not reached."
            if burst.drained_in is None
            else f"reached {burst.drained_in:.0f} s after the burst."
        ),
        "",
    ]
    if stamp is not None:
        for phase in phases:
            path = chart(phase, stamp)
            lines.append(f"![{phase.name}](loadtest/{path.name})")
    return "\n".join(lines) + "\n", passed_all


def write_report(
    capacity: float,
    phases: list[Phase],
    origin: str,
    minutes: float,
    wall: float,
    no_record: bool,
) -> bool:
    stamp = None if no_record else datetime.now(UTC).strftime("%Y%m%d-%H%M")
    section, passed = render(capacity, phases, origin, minutes, wall, stamp)
    print(section)
    if not no_record:
        if not REPORT_PATH.exists():
            REPORT_PATH.write_text(
                "# Load-test results\n\n`make loadtest` (bench/loadtest.py) appends a section "
                "per run, with its charts in bench/loadtest/.\n\n"
            )
        with REPORT_PATH.open("a") as out:
            out.write("\n" + section)
    return passed
