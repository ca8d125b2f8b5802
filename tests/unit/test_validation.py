"""Validation and normalisation of client input, and the domain error types it raises.

Time is always the fixed NOW below, never the wall clock.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from scheduler.domain.errors import (
    ConcurrentModification,
    Conflict,
    DatabaseUnavailable,
    FailedPrecondition,
    FieldViolation,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidTransition,
    JobNotFound,
    JobschedError,
    NotFound,
    Unavailable,
)
from scheduler.domain.jobs import NewJob
from scheduler.domain.retry import RetryOverrides
from scheduler.domain.states import JobState
from scheduler.domain.validation import (
    JobSpecInput,
    check_states,
    normalise_name,
    validate_batch,
    validate_job,
    validate_job_id,
    validate_reason,
)

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
MIB = 1024 * 1024
US = timedelta(microseconds=1)


def spec(**fields: Any) -> JobSpecInput:
    """A valid spec (only `type` is required) with `fields` overridden."""
    fields.setdefault("type", "email.send")
    return JobSpecInput(**fields)


def violations(job_spec: JobSpecInput, path: str = "job") -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as exc:
        validate_job(job_spec, NOW, path)
    return exc.value.violations


def fields_of(job_spec: JobSpecInput, path: str = "job") -> list[str]:
    return [v.field for v in violations(job_spec, path)]


def batch_fields(specs: list[JobSpecInput]) -> list[str]:
    with pytest.raises(InvalidArgument) as exc:
        validate_batch(specs, NOW)
    return [v.field for v in exc.value.violations]


# --- defaults and normalisation -------------------------------------------------------------


def test_defaults():
    job = validate_job(JobSpecInput(type="email.send"), NOW)
    assert isinstance(job, NewJob)
    assert job == NewJob(
        queue="default",
        type="email.send",
        payload=b"",
        priority=50,
        max_attempts=None,  # the queue's default, else 3: resolved by the store at submit
        run_at=NOW,
        state=JobState.QUEUED,
        labels={},
        idempotency_key=None,
        timeout=None,
    )


def test_given_values_are_kept():
    run_at = NOW + timedelta(hours=1)
    job = validate_job(
        spec(
            queue="reports",
            payload=b"\x00\xff",
            priority=7,
            max_attempts=9,
            run_at=run_at,
            labels={"env": "prod"},
            idempotency_key="Key-1",
            timeout=timedelta(minutes=5),
        ),
        NOW,
    )
    assert job.queue == "reports"
    assert job.payload == b"\x00\xff"
    assert job.priority == 7
    assert job.max_attempts == 9
    assert job.run_at == run_at
    assert job.state is JobState.SCHEDULED
    assert job.labels == {"env": "prod"}
    assert job.idempotency_key == "Key-1"  # not normalised: keys are opaque
    assert job.timeout == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("", "default"), ("DEFAULT", "default"), ("Emails.High", "emails.high"), ("a", "a")],
)
def test_queue_is_lower_cased_and_defaulted(given, expected):
    assert validate_job(spec(queue=given), NOW).queue == expected


@pytest.mark.parametrize(
    ("given", "expected"), [("Email.Send", "email.send"), ("REPORT_V2", "report_v2")]
)
def test_type_is_lower_cased(given, expected):
    assert validate_job(spec(type=given), NOW).type == expected


def test_normalise_name():
    assert normalise_name("MiXeD.Case-1_x") == "mixed.case-1_x"
    assert normalise_name("already") == "already"
    assert normalise_name("") == ""


def test_zero_priority_is_not_replaced_by_the_default():
    assert validate_job(spec(priority=0), NOW).priority == 0


def test_labels_are_copied():
    labels = {"env": "prod"}
    job = validate_job(spec(labels=labels), NOW)
    labels["env"] = "dev"
    assert job.labels == {"env": "prod"}


def test_empty_idempotency_key_means_none():
    assert validate_job(spec(idempotency_key=""), NOW).idempotency_key is None


# --- names (queue, type) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["a", "a" * 64, "emails", "e1", "a_b", "a.b", "a-b", "x0_.-", "A" * 64],
    ids=lambda n: n[:12],
)
@pytest.mark.parametrize("field", ["queue", "type"])
def test_valid_names(field, name):
    job = validate_job(spec(**{field: name}), NOW)
    assert getattr(job, field) == name.lower()


@pytest.mark.parametrize(
    "name",
    ["a" * 65, "1abc", "_abc", ".abc", "-abc", "a b", "a/b", "a:b", "é", "emails!", " a", "a "],
    ids=repr,
)
@pytest.mark.parametrize("field", ["queue", "type"])
def test_invalid_names(field, name):
    found = violations(spec(**{field: name}))
    assert [v.field for v in found] == [f"job.{field}"]
    assert repr(name) in found[0].description


@pytest.mark.parametrize("field", ["queue", "type"])
def test_name_with_trailing_newline_is_rejected(field):
    assert fields_of(spec(**{field: "emails\n"})) == [f"job.{field}"]


def test_type_is_required():
    found = violations(JobSpecInput())
    assert [v.field for v in found] == ["job.type"]
    assert "required" in found[0].description


# --- payload --------------------------------------------------------------------------------


def test_payload_of_exactly_one_mib_is_accepted():
    job = validate_job(spec(payload=b"x" * MIB), NOW)
    assert len(job.payload) == MIB


def test_payload_over_one_mib_is_rejected():
    found = violations(spec(payload=b"x" * (MIB + 1)))
    assert [v.field for v in found] == ["job.payload"]
    assert str(MIB + 1) in found[0].description
    assert str(MIB) in found[0].description


# --- priority and max_attempts --------------------------------------------------------------


@pytest.mark.parametrize("priority", [0, 1, 50, 99, 100])
def test_priority_in_range(priority):
    assert validate_job(spec(priority=priority), NOW).priority == priority


@pytest.mark.parametrize("priority", [-1, 101, -1000, 10**9])
def test_priority_out_of_range(priority):
    found = violations(spec(priority=priority))
    assert [v.field for v in found] == ["job.priority"]
    assert "[0, 100]" in found[0].description


@pytest.mark.parametrize("max_attempts", [1, 2, 99, 100])
def test_max_attempts_in_range(max_attempts):
    assert validate_job(spec(max_attempts=max_attempts), NOW).max_attempts == max_attempts


@pytest.mark.parametrize("max_attempts", [0, 101, -1])
def test_max_attempts_out_of_range(max_attempts):
    found = violations(spec(max_attempts=max_attempts))
    assert [v.field for v in found] == ["job.max_attempts"]
    assert "[1, 100]" in found[0].description


# --- run_at ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_at",
    [None, NOW - US, NOW - timedelta(days=1), datetime(2000, 1, 1, tzinfo=UTC), NOW],
    ids=["none", "1us-ago", "yesterday", "year-2000", "now"],
)
def test_run_at_not_in_the_future_means_now_and_queued(run_at):
    job = validate_job(spec(run_at=run_at), NOW)
    assert job.run_at == NOW
    assert job.state is JobState.QUEUED


@pytest.mark.parametrize(
    "ahead",
    [US, timedelta(seconds=1), timedelta(days=30), timedelta(days=365)],
    ids=["1us", "1s", "30d", "365d"],
)
def test_run_at_in_the_future_is_kept_and_scheduled(ahead):
    job = validate_job(spec(run_at=NOW + ahead), NOW)
    assert job.run_at == NOW + ahead
    assert job.state is JobState.SCHEDULED


def test_run_at_in_another_time_zone_is_compared_as_an_instant():
    plus_two = timezone(timedelta(hours=2))
    # 13:00+02:00 is 11:00 UTC: in the past.
    past = validate_job(spec(run_at=datetime(2025, 3, 14, 13, 0, tzinfo=plus_two)), NOW)
    assert past.state is JobState.QUEUED
    assert past.run_at == NOW
    # 15:00+02:00 is 13:00 UTC: an hour ahead.
    future = validate_job(spec(run_at=datetime(2025, 3, 14, 15, 0, tzinfo=plus_two)), NOW)
    assert future.state is JobState.SCHEDULED
    assert future.run_at == NOW + timedelta(hours=1)


@pytest.mark.parametrize(
    "ahead", [timedelta(days=365) + US, timedelta(days=366), timedelta(days=4000)]
)
def test_run_at_more_than_a_year_ahead_is_rejected(ahead):
    found = violations(spec(run_at=NOW + ahead))
    assert [v.field for v in found] == ["job.run_at"]
    assert "365" in found[0].description


# --- labels ---------------------------------------------------------------------------------


def test_32_labels_are_accepted():
    labels = {f"k{i}": "v" for i in range(32)}
    assert validate_job(spec(labels=labels), NOW).labels == labels


def test_33_labels_are_rejected():
    found = violations(spec(labels={f"k{i}": "v" for i in range(33)}))
    assert [v.field for v in found] == ["job.labels"]
    assert "32" in found[0].description


@pytest.mark.parametrize("key", ["a", "env", "a" * 64, "team.name", "x-1_y"])
def test_valid_label_keys(key):
    assert validate_job(spec(labels={key: "v"}), NOW).labels == {key: "v"}


@pytest.mark.parametrize("key", ["", "a" * 65, "Env", "1a", "a b", "é", "a/b"], ids=repr)
def test_invalid_label_keys(key):
    found = violations(spec(labels={key: "v"}))
    assert [v.field for v in found] == [f"job.labels[{key!r}]"]
    assert "key" in found[0].description


def test_label_key_with_trailing_newline_is_rejected():
    assert fields_of(spec(labels={"env\n": "v"})) == ["job.labels['env\\n']"]


@pytest.mark.parametrize("value", ["", "v", "x" * 256, "any text: ☃ / spaces"], ids=len)
def test_valid_label_values(value):
    assert validate_job(spec(labels={"k": value}), NOW).labels == {"k": value}


def test_label_value_over_256_characters_is_rejected():
    found = violations(spec(labels={"k": "x" * 257}))
    assert [v.field for v in found] == ["job.labels['k']"]
    assert "256" in found[0].description


def test_label_with_bad_key_and_long_value_reports_both():
    found = violations(spec(labels={"Bad": "x" * 257}))
    assert [v.field for v in found] == ["job.labels['Bad']", "job.labels['Bad']"]


def test_every_bad_label_is_reported():
    labels = {"ok": "v", "Bad1": "v", "bad2 ": "v", "long": "x" * 300}
    assert fields_of(spec(labels=labels)) == [
        "job.labels['Bad1']",
        "job.labels['bad2 ']",
        "job.labels['long']",
    ]


# --- idempotency key ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["k", "x" * 200, "order 42 / retry", "ключ-1", "A:B:C"], ids=len)
def test_valid_idempotency_keys(key):
    assert validate_job(spec(idempotency_key=key), NOW).idempotency_key == key


@pytest.mark.parametrize(
    "key",
    ["x" * 201, "a\nb", "tab\there", "nul\x00", "del\x7f", "bell\x07", "\u200b", "line\u2028"],
    ids=repr,
)
def test_invalid_idempotency_keys(key):
    found = violations(spec(idempotency_key=key))
    assert [v.field for v in found] == ["job.idempotency_key"]
    assert "200" in found[0].description


# --- timeout --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timeout",
    [None, US, timedelta(seconds=30), timedelta(days=7)],
    ids=["none", "1us", "30s", "7d"],
)
def test_valid_timeouts(timeout):
    assert validate_job(spec(timeout=timeout), NOW).timeout == timeout


@pytest.mark.parametrize(
    "timeout",
    [timedelta(0), -US, timedelta(days=-1), timedelta(days=7) + US, timedelta(days=30)],
    ids=["zero", "-1us", "-1d", "7d+1us", "30d"],
)
def test_invalid_timeouts(timeout):
    found = violations(spec(timeout=timeout))
    assert [v.field for v in found] == ["job.timeout"]
    assert "7 days" in found[0].description


# --- all violations at once -----------------------------------------------------------------


BAD_SPEC = JobSpecInput(
    queue="Bad Queue",
    type="",
    payload=b"x" * (MIB + 1),
    priority=101,
    max_attempts=0,
    run_at=NOW + timedelta(days=400),
    labels={"Bad": "v"},
    idempotency_key="a\nb",
    timeout=timedelta(0),
)
BAD_SPEC_FIELDS = [
    "queue",
    "type",
    "payload",
    "priority",
    "max_attempts",
    "run_at",
    "labels['Bad']",
    "idempotency_key",
    "timeout",
]


def test_every_violation_is_reported_with_its_path():
    with pytest.raises(InvalidArgument) as exc:
        validate_job(BAD_SPEC, NOW)
    error = exc.value
    assert [v.field for v in error.violations] == [f"job.{f}" for f in BAD_SPEC_FIELDS]
    assert error.message == "; ".join(f"{v.field}: {v.description}" for v in error.violations)
    assert error.message.startswith("job.queue: 'Bad Queue' must match")
    assert error.reason == "INVALID_ARGUMENT"


def test_path_prefix_is_configurable():
    assert fields_of(spec(priority=-1, max_attempts=0), path="request.job") == [
        "request.job.priority",
        "request.job.max_attempts",
    ]


def test_spec_input_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec().queue = "x"  # type: ignore[misc]


# --- batches --------------------------------------------------------------------------------


def test_batch_keeps_order_and_normalises():
    jobs = validate_batch(
        [spec(type="A"), spec(type="b", queue="Q1"), spec(type="c", run_at=NOW + US)], NOW
    )
    assert [(j.type, j.queue, j.state) for j in jobs] == [
        ("a", "default", JobState.QUEUED),
        ("b", "q1", JobState.QUEUED),
        ("c", "default", JobState.SCHEDULED),
    ]


def test_empty_batch_is_rejected():
    with pytest.raises(InvalidArgument) as exc:
        validate_batch([], NOW)
    assert [v.field for v in exc.value.violations] == ["jobs"]
    assert "at least one" in exc.value.violations[0].description


def test_batch_of_5000_is_accepted():
    assert len(validate_batch([spec()] * 5000, NOW)) == 5000


def test_batch_over_5000_is_rejected():
    with pytest.raises(InvalidArgument) as exc:
        validate_batch([spec()] * 5001, NOW)
    assert [v.field for v in exc.value.violations] == ["jobs"]
    assert "5000" in exc.value.violations[0].description


def test_batch_paths_name_the_index():
    specs = [spec(), spec(), spec(), spec(priority=101)]
    assert batch_fields(specs) == ["jobs[3].priority"]


def test_batch_reports_every_violation_of_every_job():
    specs = [JobSpecInput(), spec(), spec(queue="Bad Queue", max_attempts=101), spec(timeout=-US)]
    assert batch_fields(specs) == [
        "jobs[0].type",
        "jobs[2].queue",
        "jobs[2].max_attempts",
        "jobs[3].timeout",
    ]


def test_batch_reports_every_field_of_a_fully_bad_job():
    assert batch_fields([spec(), BAD_SPEC]) == [f"jobs[1].{f}" for f in BAD_SPEC_FIELDS]


def test_duplicate_idempotency_key_in_a_batch_is_rejected():
    specs = [spec(idempotency_key="k"), spec(idempotency_key="other"), spec(idempotency_key="k")]
    with pytest.raises(InvalidArgument) as exc:
        validate_batch(specs, NOW)
    assert exc.value.violations == [
        FieldViolation("jobs[2].idempotency_key", "repeats the key of jobs[0]")
    ]


def test_every_repeat_points_at_the_first_use_of_the_key():
    specs = [spec(idempotency_key="k")] * 3 + [spec(idempotency_key="j")] * 2
    with pytest.raises(InvalidArgument) as exc:
        validate_batch(specs, NOW)
    assert [(v.field, v.description) for v in exc.value.violations] == [
        ("jobs[1].idempotency_key", "repeats the key of jobs[0]"),
        ("jobs[2].idempotency_key", "repeats the key of jobs[0]"),
        ("jobs[4].idempotency_key", "repeats the key of jobs[3]"),
    ]


def test_idempotency_keys_are_compared_exactly():
    jobs = validate_batch([spec(idempotency_key="k"), spec(idempotency_key="K")], NOW)
    assert [j.idempotency_key for j in jobs] == ["k", "K"]


def test_jobs_without_idempotency_key_are_not_duplicates():
    jobs = validate_batch([spec(), spec(), spec(idempotency_key="")], NOW)
    assert [j.idempotency_key for j in jobs] == [None, None, None]


def test_duplicate_keys_are_reported_together_with_other_violations():
    specs = [spec(idempotency_key="k"), spec(idempotency_key="k", priority=-1)]
    assert batch_fields(specs) == ["jobs[1].priority", "jobs[1].idempotency_key"]


# --- job ids, reasons, state filters --------------------------------------------------------


UUID_LOWER = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_job_id_is_accepted_in_canonical_form():
    assert validate_job_id(UUID_LOWER) == UUID_LOWER


def test_job_id_is_canonicalised_to_lower_case():
    assert validate_job_id(UUID_LOWER.upper()) == UUID_LOWER


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        "not-a-uuid",
        "42",
        UUID_LOWER[:-1],
        UUID_LOWER + "0",
        UUID_LOWER.replace("0", "g", 1),
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        "'; DROP TABLE jobs; --",
    ],
    ids=repr,
)
def test_garbage_job_ids_are_rejected(value):
    with pytest.raises(InvalidArgument) as exc:
        validate_job_id(value)
    assert [v.field for v in exc.value.violations] == ["id"]
    assert repr(value) in exc.value.violations[0].description


def test_job_id_path_is_configurable():
    with pytest.raises(InvalidArgument) as exc:
        validate_job_id("nope", path="depends_on[2]")
    assert [v.field for v in exc.value.violations] == ["depends_on[2]"]


def test_non_string_job_id_is_rejected():
    with pytest.raises(InvalidArgument):
        validate_job_id(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    ["0x" + "0" * 30, "+" + "a" * 31, " " + "a" * 31, "a" * 31 + "\n", "a_" + "a" * 30],
    ids=repr,
)
def test_job_ids_that_int_would_parse_are_rejected(value):
    with pytest.raises(InvalidArgument):
        validate_job_id(value)


@pytest.mark.parametrize("value", ["", "user asked", "r" * 1000])
def test_reason_up_to_1000_characters_is_accepted(value):
    assert validate_reason(value) == value


def test_reason_over_1000_characters_is_rejected():
    with pytest.raises(InvalidArgument) as exc:
        validate_reason("r" * 1001)
    assert [v.field for v in exc.value.violations] == ["reason"]
    assert "1000" in exc.value.violations[0].description


def test_reason_path_is_configurable():
    with pytest.raises(InvalidArgument) as exc:
        validate_reason("r" * 1001, path="cancel.reason")
    assert exc.value.violations[0].field == "cancel.reason"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})


def test_check_states_empty_means_all_allowed():
    chosen = check_states([], TERMINAL, "states", "a terminal state")
    assert isinstance(chosen, tuple)
    assert set(chosen) == set(TERMINAL)
    assert len(chosen) == 3


def test_check_states_deduplicates_and_orders_deterministically():
    a = check_states([JobState.DEAD, JobState.SUCCEEDED, JobState.DEAD], TERMINAL, "states", "x")
    b = check_states([JobState.SUCCEEDED, JobState.DEAD], TERMINAL, "states", "x")
    assert a == b
    assert set(a) == {JobState.DEAD, JobState.SUCCEEDED}
    assert len(a) == 2


def test_check_states_accepts_any_iterable():
    chosen = check_states(iter([JobState.CANCELLED]), TERMINAL, "states", "x")
    assert chosen == (JobState.CANCELLED,)


def test_check_states_rejects_states_outside_the_allowed_set():
    with pytest.raises(InvalidArgument) as exc:
        check_states(
            [JobState.RUNNING, JobState.DEAD, JobState.QUEUED],
            TERMINAL,
            "filter.states",
            "a terminal state",
        )
    [violation] = exc.value.violations
    assert violation.field == "filter.states"
    assert "RUNNING" in violation.description
    assert "QUEUED" in violation.description
    assert "DEAD" not in violation.description
    assert "a terminal state" in violation.description


# --- the error types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "parent", "reason"),
    [
        (JobschedError, Exception, "INTERNAL"),
        (InvalidArgument, JobschedError, "INVALID_ARGUMENT"),
        (NotFound, JobschedError, "NOT_FOUND"),
        (JobNotFound, NotFound, "JOB_NOT_FOUND"),
        (FailedPrecondition, JobschedError, "FAILED_PRECONDITION"),
        (InvalidTransition, FailedPrecondition, "INVALID_TRANSITION"),
        (Conflict, JobschedError, "CONFLICT"),
        (ConcurrentModification, Conflict, "CONCURRENT_MODIFICATION"),
        (IdempotencyKeyReused, Conflict, "IDEMPOTENCY_KEY_REUSED"),
        (Unavailable, JobschedError, "UNAVAILABLE"),
        (DatabaseUnavailable, Unavailable, "DATABASE_UNAVAILABLE"),
    ],
    ids=lambda v: getattr(v, "__name__", v),
)
def test_error_tree_and_reasons(cls, parent, reason):
    assert cls.__bases__ == (parent,)
    assert cls.reason == reason


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (JobschedError(), "Internal error."),
        (NotFound(), "Not found."),
        (FailedPrecondition(), "The operation is not allowed in the current state."),
        (InvalidTransition(), "The job's state does not allow this operation."),
        (ConcurrentModification(), "The job changed concurrently; read it again and retry."),
        (IdempotencyKeyReused(), "The idempotency key was already used for a different job."),
        (DatabaseUnavailable(), "The job store is unreachable."),
        (InvalidArgument([]), "The request is invalid."),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else "",
)
def test_default_message_is_the_docstring(error, message):
    assert error.message == message
    assert str(error) == message


def test_explicit_message_wins():
    error = InvalidTransition("cannot retry a RUNNING job")
    assert error.message == "cannot retry a RUNNING job"
    assert str(error) == "cannot retry a RUNNING job"


def test_error_without_docstring_falls_back_to_its_reason():
    class Bare(JobschedError):
        reason = "BARE"

    Bare.__doc__ = None
    assert Bare().message == "BARE"


def test_job_not_found_names_the_job():
    error = JobNotFound("abc")
    assert error.job_id == "abc"
    assert str(error) == "job abc not found"
    assert isinstance(error, NotFound)


def test_invalid_argument_message_joins_violations():
    error = InvalidArgument([FieldViolation("a", "x"), FieldViolation("b.c", "y")])
    assert error.message == "a: x; b.c: y"
    assert str(error) == "a: x; b.c: y"


def test_invalid_argument_explicit_message_keeps_violations():
    error = InvalidArgument([FieldViolation("a", "x")], message="bad request")
    assert error.message == "bad request"
    assert error.violations == [FieldViolation("a", "x")]


def test_invalid_argument_copies_its_violations():
    given = [FieldViolation("a", "x")]
    error = InvalidArgument(given)
    given.append(FieldViolation("b", "y"))
    assert error.violations == [FieldViolation("a", "x")]


def test_field_violation_is_an_immutable_value():
    violation = FieldViolation("job.queue", "bad")
    assert violation == FieldViolation("job.queue", "bad")
    assert violation != FieldViolation("job.type", "bad")
    with pytest.raises(dataclasses.FrozenInstanceError):
        violation.field = "other"  # type: ignore[misc]


# --- retry policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "fields"),
    [
        (RetryOverrides(initial=timedelta(0)), ["job.retry_policy.initial_backoff"]),
        (
            RetryOverrides(initial=timedelta(days=1, seconds=1)),
            ["job.retry_policy.initial_backoff"],
        ),
        (RetryOverrides(multiplier=0.99), ["job.retry_policy.backoff_multiplier"]),
        (RetryOverrides(multiplier=10.01), ["job.retry_policy.backoff_multiplier"]),
        (RetryOverrides(maximum=timedelta(days=7, seconds=1)), ["job.retry_policy.max_backoff"]),
        (
            RetryOverrides(initial=timedelta(seconds=10), maximum=timedelta(seconds=9)),
            ["job.retry_policy.max_backoff"],
        ),
        (RetryOverrides(jitter=-0.01), ["job.retry_policy.jitter"]),
        (RetryOverrides(jitter=1.01), ["job.retry_policy.jitter"]),
    ],
)
def test_retry_policy_bounds(retry: RetryOverrides, fields: list[str]) -> None:
    assert fields_of(JobSpecInput(type="t", retry=retry)) == fields


def test_retry_policy_at_its_bounds_is_accepted() -> None:
    retry = RetryOverrides(
        initial=timedelta(days=1), multiplier=10, maximum=timedelta(days=7), jitter=1
    )
    assert validate_job(JobSpecInput(type="t", retry=retry), NOW).retry == retry
    low = RetryOverrides(initial=timedelta(microseconds=1), multiplier=1, jitter=0)
    assert validate_job(JobSpecInput(type="t", retry=low), NOW).retry == low
