"""What a command's output becomes: log lines, progress reports, a capped budget and the tail of
stderr. Pure: bytes are fed in, the callbacks are called; the reading is executor/command.py's.

The protocol, for command authors:

- each line of stdout is a log line of the job as is; each line of stderr is one too, prefixed
  ``[stderr] ``. A line is cut into pieces of MAX_LINE_BYTES; invalid UTF-8 becomes U+FFFD;
- a stdout line ``::progress PERCENT [MESSAGE...]`` (PERCENT a number, clamped to 0..100) is a
  progress report of the job instead of a log line: ``::progress 42 encoding pass 1``. A line
  that only looks like one (``::progress soon``) is logged as is;
- after `max_output` bytes of logged lines in an attempt, one line says the output was cut and
  the rest is not logged (it is still read, so the command never blocks on a full pipe, and
  progress lines still count);
- the last TAIL_BYTES of stderr are kept for the result or the failure message.
"""

from __future__ import annotations

import math
from collections.abc import Callable

PROGRESS_PREFIX = "::progress"
STDERR_PREFIX = "[stderr] "
MAX_LINE_BYTES = 4096  # the scheduler keeps 4096 characters of a line
TAIL_BYTES = 2048


def parse_progress(line: str) -> tuple[float, str] | None:
    """(percent, message) of a ``::progress`` line, else None."""
    parts = line.split(maxsplit=2)
    if len(parts) < 2 or parts[0] != PROGRESS_PREFIX:
        return None
    try:
        percent = float(parts[1])
    except ValueError:
        return None
    if not math.isfinite(percent):
        return None
    return min(100.0, max(0.0, percent)), parts[2] if len(parts) > 2 else ""


class OutputCapture:
    """Turns the chunks read from stdout and stderr into `log` and `progress` calls."""

    def __init__(
        self,
        *,
        max_output: int,
        log: Callable[[str], None],
        progress: Callable[[float, str], None],
    ) -> None:
        self.max_output = max_output
        self._log = log
        self._progress = progress
        self.output_bytes = 0  # every byte read from both streams
        self.logged_bytes = 0
        self.cut = False
        self._partial = {"stdout": bytearray(), "stderr": bytearray()}
        self._tail = bytearray()
        self._tail_cut = False

    def feed(self, stream: str, data: bytes) -> None:
        """A chunk read from `stream` ("stdout" or "stderr")."""
        self.output_bytes += len(data)
        if stream == "stderr":
            self._tail += data
            if len(self._tail) > TAIL_BYTES:
                del self._tail[: len(self._tail) - TAIL_BYTES]
                self._tail_cut = True
        partial = self._partial[stream]
        partial += data
        start = 0
        while True:
            end = partial.find(b"\n", start)
            if end < 0:
                break
            self._pieces(stream, bytes(partial[start:end]))
            start = end + 1
        del partial[:start]
        while len(partial) >= MAX_LINE_BYTES:
            self._line(stream, bytes(partial[:MAX_LINE_BYTES]))
            del partial[:MAX_LINE_BYTES]

    def close(self, stream: str) -> None:
        """`stream` ended: its last line, if it had no newline, is a line too."""
        partial = self._partial[stream]
        if partial:
            self._line(stream, bytes(partial))
            partial.clear()

    def _pieces(self, stream: str, raw: bytes) -> None:
        for offset in range(0, max(len(raw), 1), MAX_LINE_BYTES):
            self._line(stream, raw[offset : offset + MAX_LINE_BYTES])

    @property
    def stderr_tail(self) -> str:
        tail = bytes(self._tail)
        if self._tail_cut and b"\n" in tail[:-1]:
            tail = tail[tail.index(b"\n") + 1 :]  # from a line's start
        return tail.decode("utf-8", errors="replace").rstrip("\n")

    def _line(self, stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").removesuffix("\r")
        if stream == "stdout":
            progress = parse_progress(text)
            if progress is not None:
                self._progress(*progress)
                return
        else:
            text = STDERR_PREFIX + text
        if self.cut:
            return
        size = len(raw) + 1
        if self.logged_bytes + size > self.max_output:
            self.cut = True
            self._log(
                f"[output cut: over {self.max_output} bytes this attempt (--max-output); "
                "the rest is not logged]"
            )
            return
        self.logged_bytes += size
        self._log(text)
