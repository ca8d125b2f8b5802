"""WatchJob's merge of transitions and log lines: the lines of an attempt come after the event
that started it and before the one that ended it."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.api.job_service import _in_watch_order
from scheduler.domain.jobs import JobEventRecord
from scheduler.domain.log_lines import LogLine
from scheduler.domain.states import JobState

AT = datetime(2026, 1, 1, tzinfo=UTC)
R, Q, SCH, OK = JobState.RUNNING, JobState.QUEUED, JobState.SCHEDULED, JobState.SUCCEEDED


def event(seq: int, from_state: JobState, to_state: JobState, attempt: int) -> JobEventRecord:
    return JobEventRecord("j", seq, from_state, to_state, attempt, None, "", "test", AT)


def line(attempt: int, number: int) -> LogLine:
    return LogLine("j", attempt, number, f"{attempt}.{number}", AT)


def names(items: list[JobEventRecord | LogLine]) -> list[str]:
    return [
        f"line {i.attempt}.{i.line_number}"
        if isinstance(i, LogLine)
        else f"event {i.seq} {i.to_state.value}"
        for i in items
    ]


RETRY = [
    event(2, R, SCH, 1),  # attempt 1 failed
    event(3, SCH, Q, 1),
    event(4, Q, R, 2),  # attempt 2 started
    event(5, R, OK, 2),
]


def test_lines_sit_between_the_start_and_the_end_of_their_attempt() -> None:
    lines = [line(1, 7), line(1, 8), line(2, 1), line(2, 2)]
    assert names(list(_in_watch_order(RETRY, lines, lines_complete=True))) == [
        "line 1.7",
        "line 1.8",
        "event 2 scheduled",
        "event 3 queued",
        "event 4 running",
        "line 2.1",
        "line 2.2",
        "event 5 succeeded",
    ]


def test_without_events_or_lines_the_other_passes_through() -> None:
    assert names(list(_in_watch_order([], [line(3, 1)], lines_complete=True))) == ["line 3.1"]
    assert names(list(_in_watch_order(RETRY[:1], [], lines_complete=True))) == ["event 2 scheduled"]


def test_lines_after_the_events_of_a_still_running_attempt_come_last() -> None:
    events = [event(4, Q, R, 2)]
    assert names(list(_in_watch_order(events, [line(2, 1)], lines_complete=True))) == [
        "event 4 running",
        "line 2.1",
    ]


def test_with_more_lines_waiting_it_stops_before_an_event_they_must_precede() -> None:
    # A full batch of attempt 1's lines: more of them may follow, so attempt 1's end waits.
    lines = [line(1, 1), line(1, 2)]
    assert names(list(_in_watch_order(RETRY, lines, lines_complete=False))) == [
        "line 1.1",
        "line 1.2",
    ]
    # A full batch reaching into attempt 2: attempt 1's end and attempt 2's start may go.
    lines = [line(1, 9), line(2, 1)]
    assert names(list(_in_watch_order(RETRY, lines, lines_complete=False))) == [
        "line 1.9",
        "event 2 scheduled",
        "event 3 queued",
        "event 4 running",
        "line 2.1",
    ]
