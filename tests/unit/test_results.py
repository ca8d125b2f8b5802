"""The limits on an attempt's outcome: results over 1 MiB are refused, failure messages (a
traceback rides with them) are clipped keeping their head and tail."""

from __future__ import annotations

from scheduler.domain.results import (
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    clip_error,
    oversized_result,
)


def test_a_result_at_the_limit_fits_and_one_byte_more_does_not() -> None:
    assert oversized_result(b"x" * MAX_RESULT_BYTES) is None
    reason = oversized_result(b"x" * (MAX_RESULT_BYTES + 1))
    assert reason is not None
    assert f"{MAX_RESULT_BYTES + 1} bytes" in reason


def test_a_short_error_is_kept_whole() -> None:
    message = "ValueError: boom\n\nTraceback ..."
    assert clip_error(message) == message
    assert clip_error("x" * MAX_ERROR_CHARS) == "x" * MAX_ERROR_CHARS


def test_a_long_error_keeps_its_head_and_its_tail() -> None:
    message = "ValueError: boom\n" + "m" * 50_000 + "\nthe innermost frame"
    clipped = clip_error(message)
    assert clipped.startswith("ValueError: boom\n")
    assert clipped.endswith("\nthe innermost frame")
    cut = len(message) - MAX_ERROR_CHARS
    assert f"... ({cut} characters cut) ..." in clipped
    assert len(clipped) < MAX_ERROR_CHARS + 100
