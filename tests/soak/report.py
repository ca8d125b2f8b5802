"""The soak's report: what ran, the faults injected with their recovery times, and every
violation with the histories of the jobs involved, as Markdown (printed and written to a file)."""

from __future__ import annotations

import statistics

from tests.soak.run import SoakResult


def render(result: SoakResult) -> str:
    verdict = "PASSED" if not result.violations and result.drained_in is not None else "FAILED"
    lines = [
        f"# Soak: {verdict}",
        "",
        f"Seed {result.seed}, {result.minutes:g} minutes, {result.replicas} scheduler replicas, "
        f"{result.executors} executors; repeat with `make soak MINUTES={result.minutes:g} "
        f"SEED={result.seed}`.",
        "",
        "## Workload",
        "",
        *(f"- {name}: {n:,}" for name, n in sorted(result.counts.items())),
        "",
        "Jobs by final state: "
        + ", ".join(f"{state} {n:,}" for state, n in sorted(result.states.items())),
        "",
        "## Faults",
        "",
        "| at (s) | fault | target | held (s) | recovery (s) |",
        "|---|---|---|---|---|",
    ]
    for f in result.faults:
        recovery = "not recovered" if f.recovery is None else f"{f.recovery:.2f}"
        lines.append(f"| {f.at:.1f} | {f.kind} | {f.target} | {f.held:.1f} | {recovery} |")
    recoveries = [f.recovery for f in result.faults if f.recovery is not None]
    if recoveries:
        lines += [
            "",
            f"Recovery: median {statistics.median(recoveries):.2f} s, "
            f"max {max(recoveries):.2f} s over {len(recoveries)} faults.",
        ]
    lines += [
        "",
        "## Drain",
        "",
        "Did not drain within 180 s."
        if result.drained_in is None
        else f"Every job ended {result.drained_in:.1f} s after the faults stopped.",
        "",
        "## Invariants",
        "",
    ]
    if not result.violations:
        lines.append("All eight invariants held (tests/faults/invariants.py).")
    for violation in result.violations:
        lines.append(f"- {violation}")
    for job_id, history in result.histories.items():
        lines += ["", f"Job {job_id}:", "", *(f"    {h}" for h in history)]
    if result.logs:
        lines += ["", "## Service logs (tails)", "", "```", result.logs, "```"]
    return "\n".join(lines) + "\n"
