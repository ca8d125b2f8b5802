"""What is kept of a handler's log lines: numbering, the per-attempt bound, the marker, cuts."""

from __future__ import annotations

from scheduler.domain.log_lines import (
    MAX_LOG_LINE_CHARS,
    MAX_LOG_LINES_PER_ATTEMPT,
    TRUNCATION_LINE_NUMBER,
    TRUNCATION_MARKER,
    LineCursor,
    bound_lines,
)


def test_lines_are_numbered_on_from_the_first_number() -> None:
    assert bound_lines(1, ["a", "b", "c"]) == [(1, "a"), (2, "b"), (3, "c")]
    assert bound_lines(7, ["x"]) == [(7, "x")]
    assert bound_lines(3, []) == []


def test_the_bound_and_the_marker() -> None:
    assert MAX_LOG_LINES_PER_ATTEMPT == 1000
    assert TRUNCATION_LINE_NUMBER == 1001
    assert TRUNCATION_MARKER == (
        "[log truncated: only the first 1000 lines of an attempt are kept]"
    )


def test_lines_up_to_the_bound_are_kept_and_the_next_one_becomes_the_marker() -> None:
    kept = bound_lines(998, ["998", "999", "1000", "1001", "1002", "1003"])
    assert kept == [
        (998, "998"),
        (999, "999"),
        (1000, "1000"),
        (1001, TRUNCATION_MARKER),
    ]
    assert bound_lines(1000, ["1000"]) == [(1000, "1000")]  # exactly at the bound: no marker


def test_any_line_beyond_the_bound_yields_the_marker_even_if_1001_itself_was_not_sent() -> None:
    # The executor's buffer may have dropped line 1001: the reader must still learn of the cut.
    assert bound_lines(1500, ["a", "b"]) == [(TRUNCATION_LINE_NUMBER, TRUNCATION_MARKER)]
    assert bound_lines(1001, ["a"]) == [(TRUNCATION_LINE_NUMBER, TRUNCATION_MARKER)]
    assert bound_lines(2**31 - 1, ["a"]) == [(TRUNCATION_LINE_NUMBER, TRUNCATION_MARKER)]


def test_a_whole_attempt_of_1005_lines_keeps_1000_and_the_marker() -> None:
    kept = bound_lines(1, [f"line {n}" for n in range(1, 1006)])
    assert len(kept) == 1001
    assert kept[0] == (1, "line 1")
    assert kept[999] == (1000, "line 1000")
    assert kept[-1] == (1001, TRUNCATION_MARKER)


def test_long_lines_are_cut_and_nul_is_replaced() -> None:
    long = "x" * (MAX_LOG_LINE_CHARS + 10)
    [(_, cut)] = bound_lines(1, [long])
    assert cut == "x" * MAX_LOG_LINE_CHARS
    [(_, exact)] = bound_lines(1, ["y" * MAX_LOG_LINE_CHARS])
    assert len(exact) == MAX_LOG_LINE_CHARS
    # Characters, not bytes: multi-byte text is cut at the same count.
    [(_, wide)] = bound_lines(1, ["é" * (MAX_LOG_LINE_CHARS + 1)])
    assert wide == "é" * MAX_LOG_LINE_CHARS
    assert bound_lines(1, ["a\x00b"]) == [(1, "a\ufffdb")]
    assert bound_lines(1, [""]) == [(1, "")]


def test_a_report_that_cannot_be_numbered_keeps_nothing() -> None:
    assert bound_lines(0, ["a"]) == []  # an executor that does not number its lines
    assert bound_lines(-5, ["a"]) == []


def test_cursors_order_by_attempt_then_line_number() -> None:
    assert LineCursor(1, 1000) < LineCursor(2, 1) < LineCursor(2, 2)
