"""The executor reads a command payload again (executor/command_payload.py): a job stored before
the scheduler checked payloads may reach it, and must fail without retry, not run."""

from __future__ import annotations

import json
from typing import Any

import pytest

from executor.command_payload import CommandSpec, parse_command
from executor.handlers import NonRetryableError


def test_a_payload_is_read_with_its_defaults() -> None:
    spec = parse_command(json.dumps({"argv": ["true"]}).encode())
    assert spec == CommandSpec(argv=("true",))
    full = parse_command(
        json.dumps(
            {
                "argv": ["a", ""],
                "env": {"A": "1"},
                "cwd": "x/y",
                "stdin": "in",
                "timeout": 2,
                "non_retryable_exit_codes": [3],
                "limits": {"cpu": 1, "files": 9},
            }
        ).encode()
    )
    assert (full.env, full.cwd, full.stdin, full.timeout) == ({"A": "1"}, "x/y", "in", 2.0)
    assert (full.non_retryable_exit_codes, full.cpu, full.memory, full.files) == (
        frozenset({3}),
        1,
        None,
        9,
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[1]",
        {"argv": []},
        {"argv": [""]},
        {"argv": ["a\x00"]},
        {"argv": ["x"], "env": {"LD_PRELOAD": "/tmp/x.so"}},
        {"argv": ["x"], "env": {"JOBSCHED_JOB_ID": "other"}},
        {"argv": ["x"], "cwd": "../.."},
        {"argv": ["x"], "cwd": "/"},
        {"argv": ["x"], "timeout": 0},
        {"argv": ["x"], "limits": {"cpu": 0}},
        {"argv": ["x"], "limits": {"disk": 1}},
        {"argv": ["x"], "non_retryable_exit_codes": [True]},
    ],
)
def test_a_bad_payload_fails_without_retry(payload: Any) -> None:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(NonRetryableError, match=r"^command payload: "):
        parse_command(raw)
