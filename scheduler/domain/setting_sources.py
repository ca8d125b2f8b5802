"""Where each of a job's defaultable settings came from at submit: the job itself, its type, its
queue or the built-in default. Pure.

The store keeps them in `jobs.setting_sources`, one letter per setting in SETTINGS order (six
bytes per job: the column is on every row, and read by claims and lists), computed by the
submit INSERT itself; NULL for jobs submitted before migration 0013.
"""

from __future__ import annotations

import enum
import functools


class Source(enum.Enum):
    JOB = "j"
    TYPE = "t"
    QUEUE = "q"
    DEFAULT = "d"


# The settings, as field paths of the Job message, in the order of the stored letters.
SETTINGS = (
    "max_attempts",
    "timeout",
    "retry_policy.initial_backoff",
    "retry_policy.backoff_multiplier",
    "retry_policy.max_backoff",
    "retry_policy.jitter",
)
# What the column's CHECK constraint allows (migration 0013, scheduler/store/schema.py).
STORED_PATTERN = "^[jtqd]{6}$"


@functools.lru_cache(maxsize=256)
def decode(stored: str | None) -> tuple[tuple[str, Source], ...]:
    """(setting, source) pairs in SETTINGS order; none for a job without a record. At most 4**6
    distinct values exist, most jobs share a few: cached."""
    if stored is None:
        return ()
    if len(stored) != len(SETTINGS):
        raise ValueError(f"expected {len(SETTINGS)} sources, got {stored!r}")
    return tuple((name, Source(letter)) for name, letter in zip(SETTINGS, stored, strict=True))


def encode(sources: dict[str, Source]) -> str:
    """The stored form of a source for every setting (tests and tools)."""
    return "".join(sources[name].value for name in SETTINGS)
