"""`python -m tests.soak --minutes N [--seed S] [--report FILE]` (`make soak MINUTES=N`): the
chaos soak of issue 20 (tests/soak/run.py). Exit status 0 when the system drained and every
invariant held, 1 otherwise; the report is printed and written to FILE."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
from pathlib import Path

from tests.soak.report import render
from tests.soak.run import soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=2.0, help="how long faults run")
    parser.add_argument("--seed", type=int, help="repeat a run (default: a random seed)")
    parser.add_argument("--replicas", type=int, default=2, choices=(2, 3))
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--report", type=Path, default=Path("soak-report.md"))
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    print(f"soak: seed {seed}, {args.minutes:g} minutes", flush=True)
    with tempfile.TemporaryDirectory(prefix="jobsched-soak-") as work:
        result = asyncio.run(
            soak(
                Path(work),
                minutes=args.minutes,
                seed=seed,
                replicas=args.replicas,
                executors=args.executors,
            )
        )
    report = render(result)
    args.report.write_text(report)
    print(report)
    return 0 if not result.violations and result.drained_in is not None else 1


if __name__ == "__main__":
    sys.exit(main())
