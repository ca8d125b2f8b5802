"""A command's output as log lines and progress (executor/command_output.py, pure)."""

from __future__ import annotations

import pytest

from executor.command_output import MAX_LINE_BYTES, TAIL_BYTES, OutputCapture, parse_progress


def capture(max_output: int = 1 << 20) -> tuple[OutputCapture, list[str], list[tuple[float, str]]]:
    logged: list[str] = []
    reported: list[tuple[float, str]] = []
    out = OutputCapture(
        max_output=max_output, log=logged.append, progress=lambda p, m: reported.append((p, m))
    )
    return out, logged, reported


def test_lines_split_across_chunks_are_joined_and_the_last_one_is_flushed() -> None:
    out, logged, _ = capture()
    for chunk in (b"hel", b"lo\r\nwor", b"ld\n\nend"):
        out.feed("stdout", chunk)
    out.feed("stderr", b"warn\nhalf")
    out.close("stdout")
    out.close("stderr")
    assert logged == ["hello", "world", "", "[stderr] warn", "end", "[stderr] half"]
    assert out.output_bytes == 26


def test_a_long_line_is_cut_into_pieces_and_bad_utf8_replaced() -> None:
    out, logged, _ = capture()
    out.feed("stdout", b"x" * (MAX_LINE_BYTES + 10) + b"\xff\n")
    assert logged == ["x" * MAX_LINE_BYTES, "x" * 10 + "\ufffd"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("::progress 42 encoding pass 1", (42.0, "encoding pass 1")),
        ("::progress 7.5", (7.5, "")),
        ("::progress 150 over", (100.0, "over")),
        ("::progress -3", (0.0, "")),
        ("::progress soon", None),
        ("::progress nan", None),
        ("::progress", None),
        ("::progressive 5", None),
        ("  ::progress 5", (5.0, "")),
        ("echo ::progress 5", None),
    ],
)
def test_progress_lines(line: str, expected: tuple[float, str] | None) -> None:
    assert parse_progress(line) == expected


def test_progress_only_from_stdout_and_never_logged() -> None:
    out, logged, reported = capture(max_output=10)
    out.feed("stdout", b"::progress 10 a\n0123456789\n::progress 20 b\n")
    out.feed("stderr", b"::progress 30\n")
    assert reported == [(10.0, "a"), (20.0, "b")]  # after the cut too
    assert logged[0].startswith("[output cut: over 10 bytes")
    assert len(logged) == 1  # 11 bytes did not fit; nothing is logged after the cut
    assert out.cut


def test_the_stderr_tail_starts_at_a_line() -> None:
    out, _, _ = capture()
    out.feed("stderr", b"a" * TAIL_BYTES + b"\nlast words\n")
    assert out.stderr_tail == "last words"
    out, _, _ = capture()
    out.feed("stdout", b"not stderr\n")
    out.feed("stderr", b"one\ntwo\n")
    assert out.stderr_tail == "one\ntwo"
