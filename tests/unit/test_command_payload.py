"""The `command` payload checked at submit (scheduler/domain/command_payload.py): each field's
rules, the violation naming it under the job's path, and only jobs of type command checked."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.domain.command_payload import check_command_payload
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.validation import JobSpecInput, validate_batch, validate_job

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def fields(payload: Any) -> list[str]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    violations: list[FieldViolation] = []
    check_command_payload(raw, "job.payload", violations)
    return [v.field for v in violations]


def test_a_full_payload_is_accepted() -> None:
    assert (
        fields(
            {
                "argv": ["ffmpeg", "-i", "in.mp4", ""],
                "env": {"LANG": "C", "_x1": ""},
                "cwd": "a/../b/./c",
                "stdin": "data\x00with NUL is fine: it is bytes on a pipe",
                "timeout": 2.5,
                "non_retryable_exit_codes": [1, 255],
                "limits": {"cpu": 10, "memory": 1 << 30, "files": 64},
            }
        )
        == []
    )
    assert fields({"argv": ["true"]}) == []


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", ["job.payload"]),
        (b"{not json", ["job.payload"]),
        (b'{"argv": ["x"], "timeout": NaN}', ["job.payload"]),
        (["echo"], ["job.payload"]),
        ({}, ["job.payload.argv"]),
        ({"argv": "echo hi"}, ["job.payload.argv"]),
        ({"argv": []}, ["job.payload.argv"]),
        ({"argv": [""]}, ["job.payload.argv[0]"]),
        ({"argv": ["echo", 3, "a\x00b"]}, ["job.payload.argv[1]", "job.payload.argv[2]"]),
        ({"argv": ["x"], "timout": 3}, ["job.payload.timout"]),
        ({"argv": ["x"], "env": ["A=1"]}, ["job.payload.env"]),
        ({"argv": ["x"], "env": {"1A": "x"}}, ["job.payload.env['1A']"]),
        ({"argv": ["x"], "env": {"A-B": "x"}}, ["job.payload.env['A-B']"]),
        ({"argv": ["x"], "env": {"A": 1}}, ["job.payload.env['A']"]),
        ({"argv": ["x"], "env": {"A": "a\x00"}}, ["job.payload.env['A']"]),
        ({"argv": ["x"], "env": {"JOBSCHED_JOB_ID": "x"}}, ["job.payload.env['JOBSCHED_JOB_ID']"]),
        (
            {"argv": ["x"], "env": {"jobsched_attempt": "x"}},
            ["job.payload.env['jobsched_attempt']"],
        ),
        ({"argv": ["x"], "env": {"LD_PRELOAD": "/x.so"}}, ["job.payload.env['LD_PRELOAD']"]),
        ({"argv": ["x"], "env": {"dyld_x": "1"}}, ["job.payload.env['dyld_x']"]),
        ({"argv": ["x"], "cwd": "/etc"}, ["job.payload.cwd"]),
        ({"argv": ["x"], "cwd": ".."}, ["job.payload.cwd"]),
        ({"argv": ["x"], "cwd": "a/../../b"}, ["job.payload.cwd"]),
        ({"argv": ["x"], "cwd": 3}, ["job.payload.cwd"]),
        ({"argv": ["x"], "stdin": ["a"]}, ["job.payload.stdin"]),
        ({"argv": ["x"], "timeout": 0}, ["job.payload.timeout"]),
        ({"argv": ["x"], "timeout": -1}, ["job.payload.timeout"]),
        ({"argv": ["x"], "timeout": True}, ["job.payload.timeout"]),
        ({"argv": ["x"], "timeout": "5"}, ["job.payload.timeout"]),
        ({"argv": ["x"], "timeout": 7 * 24 * 3600 + 1}, ["job.payload.timeout"]),
        ({"argv": ["x"], "non_retryable_exit_codes": 3}, ["job.payload.non_retryable_exit_codes"]),
        (
            {"argv": ["x"], "non_retryable_exit_codes": [0, 256, True, 2.0, 3]},
            [f"job.payload.non_retryable_exit_codes[{i}]" for i in range(4)],
        ),
        ({"argv": ["x"], "limits": 5}, ["job.payload.limits"]),
        ({"argv": ["x"], "limits": {"cpu": 0}}, ["job.payload.limits.cpu"]),
        ({"argv": ["x"], "limits": {"memory": 1.5}}, ["job.payload.limits.memory"]),
        ({"argv": ["x"], "limits": {"files": False}}, ["job.payload.limits.files"]),
        ({"argv": ["x"], "limits": {"disk": 1}}, ["job.payload.limits['disk']"]),
    ],
)
def test_each_bad_field_is_named(payload: Any, expected: list[str]) -> None:
    assert fields(payload) == expected


def test_submit_validation_checks_command_payloads_only() -> None:
    bad = b'{"argv": []}'
    # Another type's payload is its handler's business.
    assert validate_job(JobSpecInput(type="other", payload=bad), NOW).payload == bad
    with pytest.raises(InvalidArgument) as raised:
        validate_job(JobSpecInput(type="Command", payload=bad), NOW)  # types are case-insensitive
    assert [v.field for v in raised.value.violations] == ["job.payload.argv"]


def test_a_batch_names_the_job() -> None:
    good = JobSpecInput(type="command", payload=b'{"argv": ["true"]}')
    bad = JobSpecInput(type="command", payload=b'{"argv": ["true"], "cwd": "/"}')
    with pytest.raises(InvalidArgument) as raised:
        validate_batch([good, good, good, bad], NOW)
    assert [v.field for v in raised.value.violations] == ["jobs[3].payload.cwd"]
