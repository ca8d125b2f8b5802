"""The jobsched_progress payloads: what one replica packs, another reads back exactly, and no
payload exceeds what NOTIFY takes."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from scheduler.dispatch.notify import PAYLOAD_LIMIT, parse_progress, progress_payloads
from scheduler.domain.jobs import Progress

times = st.none() | st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
reports = st.lists(
    st.tuples(
        st.uuids().map(str),
        st.integers(0, 1000),
        st.builds(
            Progress,
            st.floats(0, 100),
            st.text(max_size=1000),
            st.text(max_size=1000),
            times,
            times,
        ),
    ),
    max_size=60,
    unique_by=lambda r: r[0],
)


@given(reports)
def test_payloads_round_trip_and_fit(batch: list[tuple[str, int, Progress]]) -> None:
    payloads = progress_payloads(batch)
    assert all(len(p.encode()) <= PAYLOAD_LIMIT for p in payloads)
    parsed = [report for payload in payloads for report in parse_progress(payload)]
    # Every report that fits a payload of its own comes back, in order, exactly.
    fitting = [r for r in batch if len(progress_payloads([r])) == 1]
    assert parsed == fitting


def test_a_report_too_long_for_a_payload_is_left_out_and_the_rest_go() -> None:
    wide = "\u4e00" * 1000  # JSON escapes each as a 6-byte \\u sequence: 12,000 bytes
    now = datetime.now(UTC)
    big = ("a", 1, Progress(50.0, wide, wide, None, now))
    small = ("b", 1, Progress(20.0, "s", "m", None, now))
    assert progress_payloads([big]) == []
    assert parse_progress(progress_payloads([big, small])[0]) == [small]


def test_malformed_payloads_are_ignored() -> None:
    assert parse_progress("not json") == []
    assert parse_progress('{"a": 1}') == []
    assert parse_progress('[["id", "x", 1, "", "", null, null], [1, 2]]') == []
