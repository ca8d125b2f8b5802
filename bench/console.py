"""What the benchmark prints while it runs (the figures themselves are printed by report.py):
one line per step, with the time elapsed since the benchmark started."""

from __future__ import annotations

import time

_STARTED = time.monotonic()


def progress(message: str) -> None:
    elapsed = int(time.monotonic() - _STARTED)
    print(f"bench [{elapsed // 60:02d}:{elapsed % 60:02d}]: {message}", flush=True)
