"""A `command` job's payload as the executor reads it (`CommandSpec`).

The scheduler checks the payload field by field at submit (scheduler/domain/command_payload.py,
which the executor may not import); this reads it again defensively, since a job stored before
that check existed, or sent by a scheduler of another version, may reach an executor. Anything
wrong is a NonRetryableError: a retry would read the same bytes.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from executor.handlers import NonRetryableError

# Set by the executor, or the dynamic linker's (a job could load its own code into a program
# the executor allows).
REFUSED_ENV = ("JOBSCHED_", "LD_", "DYLD_")


@dataclass(frozen=True, slots=True)
class CommandSpec:
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "."
    stdin: str | None = None
    timeout: float | None = None
    non_retryable_exit_codes: frozenset[int] = frozenset()
    cpu: int | None = None
    memory: int | None = None
    files: int | None = None


def _bad(what: str) -> NonRetryableError:
    return NonRetryableError(f"command payload: {what}")


def _strings(value: Any) -> bool:
    return all(isinstance(item, str) and "\x00" not in item for item in value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def parse_command(payload: bytes) -> CommandSpec:
    try:
        body = json.loads(payload) if payload else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad('must be a JSON object such as {"argv": ["echo", "hello"]}')
    argv = body.get("argv")
    if not isinstance(argv, list) or not argv or not _strings(argv) or not argv[0]:
        raise _bad("argv must be a non-empty list of strings")
    env = body.get("env", {})
    if not isinstance(env, dict) or not _strings(env) or not _strings(env.values()):
        raise _bad("env must be an object of strings")
    if any(name.upper().startswith(REFUSED_ENV) or "=" in name or not name for name in env):
        raise _bad("env names must be identifiers not starting JOBSCHED_, LD_ or DYLD_")
    cwd = body.get("cwd", ".")
    if (
        not isinstance(cwd, str)
        or "\x00" in cwd
        or posixpath.isabs(cwd)
        or posixpath.normpath(cwd).split("/")[0] == ".."
    ):
        raise _bad("cwd must be a path inside the attempt's working directory")
    stdin = body.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise _bad("stdin must be a string")
    timeout = body.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise _bad("timeout must be a positive number of seconds")
    codes = body.get("non_retryable_exit_codes", [])
    if not isinstance(codes, list) or not all(_whole(code) for code in codes):
        raise _bad("non_retryable_exit_codes must be a list of exit codes")
    limits = body.get("limits", {})
    if not isinstance(limits, dict) or not all(
        key in ("cpu", "memory", "files") and _whole(value) for key, value in limits.items()
    ):
        raise _bad("limits must be an object of cpu, memory, files (whole numbers >= 1)")
    return CommandSpec(
        argv=tuple(argv),
        env=dict(env),
        cwd=cwd,
        stdin=stdin,
        timeout=None if timeout is None else float(timeout),
        non_retryable_exit_codes=frozenset(codes),
        cpu=limits.get("cpu"),
        memory=limits.get("memory"),
        files=limits.get("files"),
    )
