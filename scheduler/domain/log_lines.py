"""Log lines of an attempt: what is kept of what a handler logs.

An executor numbers its lines per attempt from 1 (a line its bounded buffer dropped keeps its
number, so numbers may have gaps) and may send a line again after a reconnect; the store keeps
the first text it got for a number. Only the first MAX_LOG_LINES_PER_ATTEMPT lines of an attempt
are kept: the line after them (number MAX + 1) becomes TRUNCATION_MARKER and the rest are
dropped, so a reader learns that there was more. Each line is cut to MAX_LOG_LINE_CHARS.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

MAX_LOG_LINES_PER_ATTEMPT = 1000
MAX_LOG_LINE_CHARS = 4096
TRUNCATION_MARKER = (
    f"[log truncated: only the first {MAX_LOG_LINES_PER_ATTEMPT} lines of an attempt are kept]"
)
# The one line number above the bound that is kept, holding TRUNCATION_MARKER.
TRUNCATION_LINE_NUMBER = MAX_LOG_LINES_PER_ATTEMPT + 1


@dataclass(frozen=True, slots=True)
class LogLine:
    """One kept line of an attempt of a job."""

    job_id: str
    attempt: int
    line_number: int
    line: str
    created_at: datetime


@dataclass(frozen=True, slots=True, order=True)
class LineCursor:
    """A position in a job's log: lines are ordered by (attempt, line_number)."""

    attempt: int
    line_number: int


def bound_lines(first_line_number: int, lines: Iterable[str]) -> list[tuple[int, str]]:
    """The (line number, text) pairs to keep of a report whose first line has number
    `first_line_number` and whose other lines are numbered on from it.

    Numbers above the bound are dropped, except that any of them yields the truncation marker
    (numbered TRUNCATION_LINE_NUMBER, whether or not that very line was sent). Texts are cut to
    MAX_LOG_LINE_CHARS and NUL characters, which PostgreSQL text cannot hold, become U+FFFD.
    A report that does not start at 1 or later keeps nothing: it cannot be numbered.
    """
    if first_line_number < 1:
        return []
    kept: list[tuple[int, str]] = []
    number = first_line_number
    for line in lines:
        if number > MAX_LOG_LINES_PER_ATTEMPT:
            kept.append((TRUNCATION_LINE_NUMBER, TRUNCATION_MARKER))
            break
        kept.append((number, _clean(line)))
        number += 1
    return kept


def _clean(line: str) -> str:
    return line[:MAX_LOG_LINE_CHARS].replace("\x00", "\ufffd")
