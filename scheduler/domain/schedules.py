"""Cron schedules: the pure rules (no I/O; `now` is always passed in).

- A schedule's cron is a standard five-field expression (minute hour day-of-month month
  day-of-week, names and `L`/`#`/`?` as croniter reads them; no seconds, no `@daily` macros, no
  hashed or random `H`/`R` fields), evaluated in an IANA time zone (empty: UTC).
- Fire times are instants (UTC). The expression matches local wall times; each wall time becomes
  an instant by the documented daylight-saving rule (`wall_to_instant`): a wall time that does
  not exist (the spring-forward gap) fires once, at the first instant after the gap, and a wall
  time that occurs twice (fall back) fires once, at its first occurrence. croniter only walks
  naive wall times here: its own time-zone handling fires a repeated time twice on the
  fall-back day (tests/unit/test_schedules.py shows it), which the documented rule forbids.
- Catch-up (`plan_fires`): a fire at most ON_TIME_GRACE late is on time and fires whatever the
  policy; older ones were missed (no leader ran). NONE fires only an on-time fire, LATEST the
  latest fire within the catch-up window, ALL every fire within the window, oldest first (at most
  `limit` per round; the rest in the next rounds).
- Overlap (`overlap_action`): while the previous fire's job is not terminal, ALLOW submits
  anyway, SKIP skips the fire, CANCEL_PREVIOUS cancels that job and submits.
- Each fire's job carries the idempotency key `schedule:<schedule id>:<fire time ISO>`.
"""

from __future__ import annotations

import enum
import functools
import re
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterError, croniter

from scheduler.domain.echo import echo, shorten
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.states import JobState
from scheduler.domain.validation import check_name

DEFAULT_TIME_ZONE = "UTC"
MAX_CRON_LENGTH = 200
DEFAULT_CATCHUP_WINDOW = timedelta(days=1)
MAX_CATCHUP_WINDOW = timedelta(days=366)
# A fire this late is on time (a failover, a slow round), not missed: it fires under any policy.
ON_TIME_GRACE = timedelta(minutes=1)
# GetSchedule shows this many next fire times.
NEXT_FIRES_SHOWN = 5
# Catch-up ALL submits at most this many fires of one schedule per round; the next rounds go on.
MAX_FIRES_PER_ROUND = 100
# Wall-time candidates a search looks at before giving up (a repeated hour of an every-minute
# schedule is 60; a gap adds as many). Only a broken zone could exhaust it.
_MAX_CANDIDATES = 10_000
# A cron that matches no date between these years never fires (expressions repeat with the
# 400-year Gregorian cycle; croniter searches 50 years ahead).
_PROBE_START = datetime(2001, 1, 1)
_FIELD_PATTERN = re.compile(r"[0-9a-z*/,?#-]+", re.IGNORECASE)
_HASHED_OR_RANDOM = re.compile(r"[hr](/.*)?", re.IGNORECASE)
_UUID_SHAPED = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")
# Host-dependent names that available_timezones() may list but that name no IANA zone.
_NOT_ZONES = frozenset({"localtime", "posixrules"})


class OverlapPolicy(enum.StrEnum):
    ALLOW = "allow"
    SKIP = "skip"
    CANCEL_PREVIOUS = "cancel_previous"


class CatchupPolicy(enum.StrEnum):
    NONE = "none"
    LATEST = "latest"
    ALL = "all"


class OverlapAction(enum.Enum):
    SUBMIT = "submit"
    SKIP = "skip"
    CANCEL_PREVIOUS = "cancel_previous"  # then submit


@functools.cache
def _zone_names() -> dict[str, str]:
    """Every IANA zone name known here (system zone data or the tzdata package), by its
    lower-case spelling."""
    return {name.lower(): name for name in zoneinfo.available_timezones() if name not in _NOT_ZONES}


def check_time_zone(value: str, path: str, violations: list[FieldViolation]) -> str:
    """The canonical IANA name for `value` (case-insensitive); empty means UTC."""
    if not value:
        return DEFAULT_TIME_ZONE
    name = _zone_names().get(value.lower())
    if name is None:
        violations.append(
            FieldViolation(path, f"{echo(value)} is not an IANA time zone (e.g. 'Europe/Berlin')")
        )
        return DEFAULT_TIME_ZONE
    return name


def check_cron(value: str, path: str, violations: list[FieldViolation]) -> str:
    """The expression with its fields separated by single spaces."""
    fields = value.split()
    problem = None
    if not fields:
        problem = "is required"
    elif len(value) > MAX_CRON_LENGTH:
        problem = f"is longer than {MAX_CRON_LENGTH} characters"
    elif len(fields) != 5:
        problem = (
            f"{echo(value)} must have five fields: minute hour day-of-month month day-of-week "
            "(e.g. '30 2 * * *')"
        )
    elif not all(_FIELD_PATTERN.fullmatch(f) for f in fields) or any(
        _HASHED_OR_RANDOM.fullmatch(item) for f in fields for item in f.split(",")
    ):
        problem = (
            f"{echo(value)} is not a cron expression (hashed H and random R are not supported)"
        )
    else:
        expression = " ".join(fields)
        try:
            croniter(expression, _PROBE_START).get_next(datetime)
        except CroniterError as exc:
            problem = f"{echo(value)} is not a valid cron expression: {shorten(str(exc), 200)}"
            if "failed to find" in str(exc):
                problem = f"{echo(value)} matches no date: it would never fire"
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            problem = f"{echo(value)} is not a valid cron expression: {shorten(str(exc), 200)}"
        else:
            return expression
    violations.append(FieldViolation(path, problem))
    return value


def check_schedule_name(value: str, path: str, violations: list[FieldViolation]) -> str:
    """Lower-cased; NAME_PATTERN; not shaped like a UUID (a schedule is named by id or name)."""
    if not value:
        violations.append(FieldViolation(path, "is required"))
        return value
    before = len(violations)
    name = check_name(value, path, violations)
    if len(violations) == before and _UUID_SHAPED.fullmatch(name):
        violations.append(FieldViolation(path, "must not look like a UUID (ids are UUIDs)"))
    return name


def check_catchup_window(
    value: timedelta | None, path: str, violations: list[FieldViolation]
) -> timedelta:
    if value is None:
        return DEFAULT_CATCHUP_WINDOW
    if not timedelta(0) < value <= MAX_CATCHUP_WINDOW:
        violations.append(
            FieldViolation(path, f"must be positive and at most {MAX_CATCHUP_WINDOW.days} days")
        )
    return value


@dataclass(frozen=True, slots=True)
class ScheduleRef:
    """A schedule named by id (a UUID, canonical form) or by name (normalised)."""

    value: str
    by_id: bool


def schedule_ref(value: str, path: str = "id") -> ScheduleRef:
    """Parse "schedule id or name"; InvalidArgument naming `path` if it is neither."""
    if _UUID_SHAPED.fullmatch(value.lower()):
        return ScheduleRef(str(uuid.UUID(value)), by_id=True)
    violations: list[FieldViolation] = []
    if not value:
        violations.append(FieldViolation(path, "is required: a schedule id or name"))
    name = check_name(value, path, violations) if value else ""
    if violations:
        raise InvalidArgument(violations)
    return ScheduleRef(name, by_id=False)


def wall_to_instant(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The instant (UTC) at which the naive local `wall` time fires in `zone`.

    A wall time that occurs twice (fall back) is taken at its first occurrence; one that does
    not exist (spring forward) at the first instant after the gap. The mapping never decreases:
    a later wall time never fires before an earlier one."""
    wall = wall.replace(tzinfo=None, fold=0)
    instant = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: the first occurrence
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # In a gap: the transition lies between the wall time read with either offset.
    a = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    b = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(a, b), max(a, b)
    low = low.replace(microsecond=0)
    before = low.astimezone(zone).utcoffset()
    # Transitions fall on whole seconds: bisect to the first second with the new offset.
    while high - low > timedelta(seconds=1):
        middle = low + timedelta(seconds=int((high - low).total_seconds()) // 2)
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class CronRule:
    """A validated cron expression in a time zone: its fire times, by the documented rule."""

    expression: str
    zone: zoneinfo.ZoneInfo

    @classmethod
    def of(cls, expression: str, time_zone: str) -> CronRule:
        """A rule from already validated values (a stored schedule)."""
        return cls(expression, zoneinfo.ZoneInfo(time_zone))

    def _wall(self, at: datetime) -> datetime:
        return at.astimezone(self.zone).replace(tzinfo=None, fold=0)

    def next_after(self, at: datetime) -> datetime:
        """The first fire time strictly after the instant `at`."""
        # Wall times after at's own wall time; in a repeated hour some of them fired before `at`
        # (at their first occurrence): skip those.
        walls = croniter(self.expression, self._wall(at))
        for _ in range(_MAX_CANDIDATES):
            instant = wall_to_instant(walls.get_next(datetime), self.zone)
            if instant > at:
                return instant
        raise RuntimeError(f"no fire time after {at} for {self.expression!r} in {self.zone}")

    def latest_at_or_before(self, at: datetime) -> datetime | None:
        """The last fire time at or before the instant `at` (None if there is none)."""
        wall = self._wall(at)
        latest: datetime | None = None
        try:
            # The latest wall time up to at's own: the mapping never decreases, so it fired at
            # or before `at`.
            earlier = croniter(self.expression, wall + timedelta(microseconds=1))
            latest = wall_to_instant(earlier.get_prev(datetime), self.zone)
        except CroniterError:
            latest = None
        # In the second pass of a repeated hour, later wall times fired (first occurrence)
        # before `at` too.
        walls = croniter(self.expression, wall)
        for _ in range(_MAX_CANDIDATES):
            instant = wall_to_instant(walls.get_next(datetime), self.zone)
            if instant > at:
                break
            latest = instant
        return latest

    def fire_times(self, after: datetime, count: int) -> list[datetime]:
        """The next `count` fire times strictly after `after`."""
        times: list[datetime] = []
        at = after
        for _ in range(count):
            at = self.next_after(at)
            times.append(at)
        return times


def parse_rule(
    cron: str,
    time_zone: str,
    violations: list[FieldViolation],
    path: str = "schedule",
) -> tuple[str, str, CronRule | None]:
    """Validate a cron expression and a time zone; (expression, zone name, rule or None)."""
    before = len(violations)
    expression = check_cron(cron, f"{path}.cron", violations)
    zone = check_time_zone(time_zone, f"{path}.time_zone", violations)
    if len(violations) != before:
        return expression, zone, None
    return expression, zone, CronRule.of(expression, zone)


def cron_rule(cron: str, time_zone: str, path: str = "schedule") -> CronRule:
    """The rule, or InvalidArgument naming `<path>.cron` and/or `<path>.time_zone`."""
    violations: list[FieldViolation] = []
    _, _, rule = parse_rule(cron, time_zone, violations, path)
    if rule is None:
        raise InvalidArgument(violations)
    return rule


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What a round does with one due schedule: fire these times (oldest first), then wait for
    `next_fire_at`."""

    fire_times: tuple[datetime, ...]
    next_fire_at: datetime


def plan_fires(
    rule: CronRule,
    next_fire_at: datetime,
    now: datetime,
    catchup: CatchupPolicy,
    window: timedelta,
    limit: int = MAX_FIRES_PER_ROUND,
) -> FirePlan:
    """The fires due at `now` of a schedule whose next unhandled fire is `next_fire_at`, by its
    catch-up policy (see the module docstring)."""
    if next_fire_at > now:
        return FirePlan((), next_fire_at)
    if catchup is CatchupPolicy.ALL:
        horizon = now - max(window, ON_TIME_GRACE)
        at = (
            next_fire_at
            if next_fire_at >= horizon
            else rule.next_after(horizon - timedelta(microseconds=1))
        )
        times: list[datetime] = []
        while at <= now and len(times) < limit:
            times.append(at)
            at = rule.next_after(at)
        return FirePlan(tuple(times), at)
    look_back = ON_TIME_GRACE if catchup is CatchupPolicy.NONE else max(window, ON_TIME_GRACE)
    latest = rule.latest_at_or_before(now)
    due = latest is not None and latest >= next_fire_at and latest >= now - look_back
    return FirePlan((latest,) if due and latest is not None else (), rule.next_after(now))


def overlap_action(policy: OverlapPolicy, previous: JobState | None) -> OverlapAction:
    """What a fire does, given the state of the previous fire's job (None: there is none, or it
    was deleted)."""
    if previous is None or previous.is_terminal or policy is OverlapPolicy.ALLOW:
        return OverlapAction.SUBMIT
    if policy is OverlapPolicy.SKIP:
        return OverlapAction.SKIP
    return OverlapAction.CANCEL_PREVIOUS


def fire_idempotency_key(schedule_id: str, fire_time: datetime) -> str:
    """The idempotency key of the job a fire submits (belt and braces with the fire's row)."""
    return f"schedule:{schedule_id}:{fire_time.astimezone(UTC).isoformat()}"


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """A validated schedule ready to be stored."""

    name: str
    cron: str
    time_zone: str
    job_template: bytes  # the validated, serialised jobsched.v1.JobSpec
    overlap: OverlapPolicy
    catchup: CatchupPolicy
    catchup_window: timedelta
    next_fire_at: datetime


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A stored schedule."""

    id: str
    tenant: str
    name: str
    cron: str
    time_zone: str
    job_template: bytes
    overlap: OverlapPolicy
    catchup: CatchupPolicy
    catchup_window: timedelta
    paused: bool
    next_fire_at: datetime
    last_fire_at: datetime | None
    last_job_id: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def rule(self) -> CronRule:
        return CronRule.of(self.cron, self.time_zone)
