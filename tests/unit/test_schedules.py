"""The pure cron rules: fire times in a time zone by the documented daylight-saving rule (a
nonexistent local time fires at the first instant after the gap, a repeated one once, at its
first occurrence), validation of expressions, zones and names, catch-up selection and overlap
decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.pagination import decode_name_token, encode_name_token, fingerprint
from scheduler.domain.schedules import (
    DEFAULT_CATCHUP_WINDOW,
    ON_TIME_GRACE,
    CatchupPolicy,
    CronRule,
    OverlapAction,
    OverlapPolicy,
    check_catchup_window,
    check_cron,
    check_schedule_name,
    check_time_zone,
    cron_rule,
    fire_idempotency_key,
    overlap_action,
    plan_fires,
    schedule_ref,
    wall_to_instant,
)
from scheduler.domain.states import JobState
from tests.helpers import utc

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(year: int, month: int, day: int, hour: int, minute: int, *, fold: int = 0) -> datetime:
    """A Berlin wall time as a UTC instant (fold=1: the second occurrence)."""
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold).astimezone(UTC)


def between(rule: CronRule, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time in (start, end]."""
    times = []
    at = rule.next_after(start)
    while at <= end:
        times.append(at)
        at = rule.next_after(at)
    return times


# --- daylight saving: Europe/Berlin 2026 ------------------------------------------------------
# Spring forward 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC); 02:00..02:59 do not exist.
# Fall back 2026-10-25: 03:00 CEST -> 02:00 CET (01:00 UTC); 02:00..02:59 occur twice.


def test_daily_0230_berlin_fires_once_on_the_spring_forward_day_at_the_end_of_the_gap() -> None:
    rule = cron_rule("30 2 * * *", "Europe/Berlin")
    fires = between(rule, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0))
    assert fires == [
        berlin(2026, 3, 28, 2, 30),  # 01:30 UTC (CET)
        berlin(2026, 3, 29, 3, 0),  # 02:30 does not exist: the first instant after the gap
        berlin(2026, 3, 30, 2, 30),  # 00:30 UTC (CEST)
    ]
    assert fires[1] == utc(2026, 3, 29, 1, 0)


def test_daily_0230_berlin_fires_once_on_the_fall_back_day_at_the_first_occurrence() -> None:
    rule = cron_rule("30 2 * * *", "Europe/Berlin")
    fires = between(rule, utc(2026, 10, 24, 0, 0), utc(2026, 10, 27, 0, 0))
    assert fires == [
        berlin(2026, 10, 24, 2, 30),
        berlin(2026, 10, 25, 2, 30, fold=0),  # 00:30 UTC, CEST; not again at 01:30 UTC
        berlin(2026, 10, 26, 2, 30),
    ]
    assert fires[1] == utc(2026, 10, 25, 0, 30)


def test_the_next_fire_asked_during_the_repeated_hour_is_not_its_second_occurrence() -> None:
    rule = cron_rule("30 2 * * *", "Europe/Berlin")
    second_pass = berlin(2026, 10, 25, 2, 10, fold=1)  # 01:10 UTC, before the second 02:30
    assert rule.next_after(second_pass) == berlin(2026, 10, 26, 2, 30)
    assert rule.latest_at_or_before(second_pass) == utc(2026, 10, 25, 0, 30)
    assert rule.latest_at_or_before(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 0, 30)
    assert rule.latest_at_or_before(utc(2026, 10, 25, 0, 29)) == berlin(2026, 10, 24, 2, 30)


def test_hourly_berlin_across_spring_forward_fires_every_real_hour_once() -> None:
    rule = cron_rule("0 * * * *", "Europe/Berlin")
    fires = between(rule, utc(2026, 3, 28, 22, 30), utc(2026, 3, 29, 3, 0))
    # Local 00:00 and 01:00 CET, then 02:00 (nonexistent) and 03:00 CEST are the same instant.
    assert fires == [utc(2026, 3, 28, 23), *(utc(2026, 3, 29, h) for h in range(4))]


def test_hourly_berlin_across_fall_back_fires_the_repeated_hour_once() -> None:
    rule = cron_rule("0 * * * *", "Europe/Berlin")
    fires = between(rule, utc(2026, 10, 24, 21, 30), utc(2026, 10, 25, 3, 0))
    # 02:00 occurs at 00:00 UTC (CEST) and at 01:00 UTC (CET): it fires at the first only.
    assert fires == [
        utc(2026, 10, 24, 22),  # 00:00 CEST
        utc(2026, 10, 24, 23),  # 01:00 CEST
        utc(2026, 10, 25, 0),  # 02:00 CEST
        utc(2026, 10, 25, 2),  # 03:00 CET
        utc(2026, 10, 25, 3),
    ]


def test_every_15_minutes_inside_the_gap_collapse_into_one_fire() -> None:
    rule = cron_rule("*/15 * * * *", "Europe/Berlin")
    fires = between(rule, utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 15))
    assert fires == [utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 15)]


def test_a_half_hour_daylight_saving_shift_lord_howe() -> None:
    # Australia/Lord_Howe: +10:30 -> +11 on 2026-10-04 at 02:00 (02:00..02:29 do not exist).
    rule = cron_rule("15 2 * * *", "Australia/Lord_Howe")
    fires = between(rule, utc(2026, 10, 2, 0, 0), utc(2026, 10, 5, 0, 0))
    assert fires == [utc(2026, 10, 2, 15, 45), utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)]


def test_new_york_repeated_0130_fires_at_the_edt_occurrence() -> None:
    rule = cron_rule("30 1 * * *", "America/New_York")
    assert between(rule, utc(2026, 10, 31, 12), utc(2026, 11, 2, 12)) == [
        utc(2026, 11, 1, 5, 30),  # 01:30 EDT, the first occurrence (not 06:30 UTC, EST)
        utc(2026, 11, 2, 6, 30),
    ]


def test_wall_to_instant_never_goes_backwards_over_a_whole_year() -> None:
    wall = datetime(2026, 1, 1)
    previous = wall_to_instant(wall, BERLIN)
    while wall < datetime(2027, 1, 1):
        wall += timedelta(minutes=15)
        instant = wall_to_instant(wall, BERLIN)
        assert instant >= previous
        previous = instant


def test_croniter_walks_naive_wall_times_whatever_the_process_zone() -> None:
    # What the wrapper relies on: naive iteration is plain calendar arithmetic. (croniter's own
    # zone handling fires 02:30 twice on the Berlin fall-back day, which the rule forbids.)
    walls = croniter("30 2 * * *", datetime(2026, 10, 24, 12))
    assert [walls.get_next(datetime) for _ in range(2)] == [
        datetime(2026, 10, 25, 2, 30),
        datetime(2026, 10, 26, 2, 30),
    ]


def test_utc_schedules_and_microseconds() -> None:
    rule = cron_rule("* * * * *", "")
    assert rule.zone.key == "UTC"
    assert rule.next_after(utc(2026, 1, 1, 12, 0)) == utc(2026, 1, 1, 12, 1)
    almost = utc(2026, 1, 1, 12, 0) - timedelta(microseconds=1)
    assert rule.next_after(almost) == utc(2026, 1, 1, 12, 0)
    assert rule.latest_at_or_before(utc(2026, 1, 1, 12, 0, 30)) == utc(2026, 1, 1, 12, 0)
    assert rule.fire_times(utc(2026, 1, 1), 3) == [utc(2026, 1, 1, 0, m) for m in (1, 2, 3)]


def test_day_of_month_or_day_of_week_and_names() -> None:
    # Both restricted: either matches (standard cron).
    rule = cron_rule("0 0 13 * fri", "UTC")
    assert rule.fire_times(utc(2026, 2, 1), 3) == [
        utc(2026, 2, 6),
        utc(2026, 2, 13),
        utc(2026, 2, 20),
    ]


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("", "is required"),
        ("   ", "is required"),
        ("* * * *", "five fields"),
        ("* * * * * *", "five fields"),  # seconds
        ("@daily", "five fields"),
        ("60 * * * *", "not a valid cron expression"),
        ("0 24 * * *", "not a valid cron expression"),
        ("*/0 * * * *", "not a valid cron expression"),
        ("0 0 * 13 *", "not a valid cron expression"),
        ("H * * * *", "hashed H and random R"),
        ("R * * * *", "hashed H and random R"),
        ("0 0 30 2 *", "never fire"),
        ("0 0 * * $", "not a cron expression"),
        ("1" * 300, "longer than"),
    ],
)
def test_bad_cron_expressions_name_the_field(expression: str, fragment: str) -> None:
    violations: list[FieldViolation] = []
    check_cron(expression, "schedule.cron", violations)
    [violation] = violations
    assert violation.field == "schedule.cron"
    assert fragment in violation.description


@pytest.mark.parametrize(
    "expression",
    ["30 2 * * *", "*/5 9-17 * * mon-fri", "0 0 L * *", "0 0 * * 1#2", "0 12 1,15 jan-jun ?"],
)
def test_good_cron_expressions(expression: str) -> None:
    violations: list[FieldViolation] = []
    assert check_cron(f"  {expression} ", "cron", violations) == expression
    assert violations == []


def test_time_zones() -> None:
    violations: list[FieldViolation] = []
    assert check_time_zone("", "tz", violations) == "UTC"
    assert check_time_zone("europe/berlin", "tz", violations) == "Europe/Berlin"
    assert check_time_zone("America/New_York", "tz", violations) == "America/New_York"
    assert violations == []
    for bad in ("Mars/Olympus", "localtime", "../etc/passwd", "+02:00", "CEST2"):
        violations = []
        check_time_zone(bad, "schedule.time_zone", violations)
        assert [v.field for v in violations] == ["schedule.time_zone"], bad


def test_cron_rule_reports_both_fields() -> None:
    with pytest.raises(InvalidArgument) as raised:
        cron_rule("nope", "Nowhere/City")
    assert [v.field for v in raised.value.violations] == ["schedule.cron", "schedule.time_zone"]


def test_schedule_names() -> None:
    violations: list[FieldViolation] = []
    assert check_schedule_name("Nightly.Report", "schedule.name", violations) == "nightly.report"
    assert violations == []
    for bad in ("", "1abc", "a" * 65, "with space", "abcdef01-2345-6789-abcd-ef0123456789"):
        violations = []
        check_schedule_name(bad, "schedule.name", violations)
        assert [v.field for v in violations] == ["schedule.name"], bad


def test_schedule_refs() -> None:
    by_id = schedule_ref("0F8FAD5B-D9CB-469F-A165-70867728950E")
    assert (by_id.value, by_id.by_id) == ("0f8fad5b-d9cb-469f-a165-70867728950e", True)
    by_name = schedule_ref("Nightly")
    assert (by_name.value, by_name.by_id) == ("nightly", False)
    for bad in ("", "no spaces please"):
        with pytest.raises(InvalidArgument) as raised:
            schedule_ref(bad)
        assert [v.field for v in raised.value.violations] == ["id"]


def test_catchup_windows() -> None:
    violations: list[FieldViolation] = []
    assert check_catchup_window(None, "w", violations) == DEFAULT_CATCHUP_WINDOW
    assert check_catchup_window(timedelta(hours=2), "w", violations) == timedelta(hours=2)
    assert violations == []
    for bad in (timedelta(0), timedelta(seconds=-1), timedelta(days=367)):
        violations = []
        check_catchup_window(bad, "schedule.catchup_window", violations)
        assert [v.field for v in violations] == ["schedule.catchup_window"]


def test_fire_idempotency_key() -> None:
    key = fire_idempotency_key("sid", berlin(2026, 3, 29, 3, 0))
    assert key == "schedule:sid:2026-03-29T01:00:00+00:00"


def test_name_page_tokens() -> None:
    fp = fingerprint({"list": "schedules", "tenant": "acme"})
    token = encode_name_token("nightly", fp)
    assert decode_name_token(token, fp) == "nightly"
    assert decode_name_token("", fp) is None
    with pytest.raises(InvalidArgument):
        decode_name_token(token, fingerprint({"list": "schedules", "tenant": "other"}))
    with pytest.raises(InvalidArgument):
        decode_name_token("garbage!", fp)


# --- catch-up ---------------------------------------------------------------------------------

EVERY_MINUTE = cron_rule("* * * * *", "UTC")
HOURLY = cron_rule("0 * * * *", "UTC")
NOW = utc(2026, 5, 1, 12, 0, 20)


def test_nothing_is_planned_before_the_next_fire_time() -> None:
    plan = plan_fires(HOURLY, utc(2026, 5, 1, 13), NOW, CatchupPolicy.ALL, timedelta(days=1))
    assert plan.fire_times == ()
    assert plan.next_fire_at == utc(2026, 5, 1, 13)


@pytest.mark.parametrize("policy", list(CatchupPolicy))
def test_an_on_time_fire_fires_under_every_policy(policy: CatchupPolicy) -> None:
    plan = plan_fires(HOURLY, utc(2026, 5, 1, 12), NOW, policy, timedelta(hours=1))
    assert plan.fire_times == (utc(2026, 5, 1, 12),)
    assert plan.next_fire_at == utc(2026, 5, 1, 13)


def test_a_fire_late_by_less_than_the_grace_is_on_time() -> None:
    now = utc(2026, 5, 1, 12) + ON_TIME_GRACE
    plan = plan_fires(HOURLY, utc(2026, 5, 1, 12), now, CatchupPolicy.NONE, timedelta(hours=1))
    assert plan.fire_times == (utc(2026, 5, 1, 12),)
    later = now + timedelta(seconds=1)
    plan = plan_fires(HOURLY, utc(2026, 5, 1, 12), later, CatchupPolicy.NONE, timedelta(hours=1))
    assert plan.fire_times == ()
    assert plan.next_fire_at == utc(2026, 5, 1, 13)


# The leader was away from 07:00 to 12:00:20; the next fire then was 07:00 (hourly).
AWAY_SINCE = utc(2026, 5, 1, 7)


def test_catchup_none_skips_every_missed_fire_but_the_on_time_one() -> None:
    plan = plan_fires(HOURLY, AWAY_SINCE, NOW, CatchupPolicy.NONE, timedelta(days=1))
    assert plan.fire_times == (utc(2026, 5, 1, 12),)  # 20 s late: on time
    missed_all = utc(2026, 5, 1, 12, 30)
    plan = plan_fires(HOURLY, AWAY_SINCE, missed_all, CatchupPolicy.NONE, timedelta(days=1))
    assert plan.fire_times == ()
    assert plan.next_fire_at == utc(2026, 5, 1, 13)


def test_catchup_latest_fires_the_latest_missed_fire_within_the_window() -> None:
    at = utc(2026, 5, 1, 12, 30)
    plan = plan_fires(HOURLY, AWAY_SINCE, at, CatchupPolicy.LATEST, timedelta(hours=1))
    assert plan.fire_times == (utc(2026, 5, 1, 12),)
    assert plan.next_fire_at == utc(2026, 5, 1, 13)
    plan = plan_fires(HOURLY, AWAY_SINCE, at, CatchupPolicy.LATEST, timedelta(minutes=29))
    assert plan.fire_times == ()  # the latest is 30 minutes old


def test_catchup_latest_never_fires_before_the_next_unhandled_fire() -> None:
    # A fire already handled (next_fire_at moved past it) is not the "latest missed" one.
    plan = plan_fires(
        HOURLY, utc(2026, 5, 1, 13), utc(2026, 5, 1, 13), CatchupPolicy.LATEST, timedelta(days=1)
    )
    assert plan.fire_times == (utc(2026, 5, 1, 13),)
    plan = plan_fires(
        HOURLY, utc(2026, 5, 1, 14), utc(2026, 5, 1, 13, 30), CatchupPolicy.LATEST, timedelta(1)
    )
    assert plan.fire_times == ()


def test_catchup_all_fires_every_missed_fire_within_the_window_oldest_first() -> None:
    plan = plan_fires(HOURLY, AWAY_SINCE, NOW, CatchupPolicy.ALL, timedelta(hours=3))
    assert plan.fire_times == tuple(utc(2026, 5, 1, h) for h in (10, 11, 12))  # 09:00 too old
    assert plan.next_fire_at == utc(2026, 5, 1, 13)
    plan = plan_fires(HOURLY, AWAY_SINCE, NOW, CatchupPolicy.ALL, timedelta(days=1))
    assert plan.fire_times == tuple(utc(2026, 5, 1, h) for h in range(7, 13))


def test_catchup_all_makes_at_most_limit_fires_per_round_and_goes_on() -> None:
    start = utc(2026, 5, 1, 11, 0)
    plan = plan_fires(EVERY_MINUTE, start, NOW, CatchupPolicy.ALL, timedelta(days=1), limit=25)
    assert len(plan.fire_times) == 25
    assert plan.fire_times[0] == start
    assert plan.next_fire_at == start + timedelta(minutes=25)  # still due: the next round
    rest = plan_fires(
        EVERY_MINUTE, plan.next_fire_at, NOW, CatchupPolicy.ALL, timedelta(days=1), limit=100
    )
    assert rest.fire_times[0] == start + timedelta(minutes=25)
    assert rest.fire_times[-1] == utc(2026, 5, 1, 12, 0)
    assert rest.next_fire_at == utc(2026, 5, 1, 12, 1)


def test_catchup_across_the_fall_back_day_counts_the_repeated_hour_once() -> None:
    rule = cron_rule("0 * * * *", "Europe/Berlin")
    plan = plan_fires(
        rule, utc(2026, 10, 24, 22), utc(2026, 10, 25, 3, 0, 5), CatchupPolicy.ALL, timedelta(1)
    )
    assert plan.fire_times == (
        utc(2026, 10, 24, 22),
        utc(2026, 10, 24, 23),
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 2),  # 01:00 UTC is the second 02:00: not a fire
        utc(2026, 10, 25, 3),
    )


# --- overlap ----------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", list(OverlapPolicy))
@pytest.mark.parametrize("state", [None, *JobState])
def test_overlap_actions(policy: OverlapPolicy, state: JobState | None) -> None:
    action = overlap_action(policy, state)
    if state is None or state.is_terminal or policy is OverlapPolicy.ALLOW:
        assert action is OverlapAction.SUBMIT
    elif policy is OverlapPolicy.SKIP:
        assert action is OverlapAction.SKIP
    else:
        assert action is OverlapAction.CANCEL_PREVIOUS
