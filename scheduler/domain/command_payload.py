"""The payload of the built-in `command` job type, checked at submit. Pure: bytes in, violations
out.

The payload is a JSON object (README "Command jobs"; the executor's side is executor/command.py):

    argv                      list of strings, required, at least argv[0] (not empty); no NUL
    env                       object of string values; names like C identifiers, not JOBSCHED_*
                              (the executor sets those) nor LD_* or DYLD_* (the dynamic
                              linker's); no NUL
    cwd                       string, relative to the attempt's working directory; no absolute
                              path, no `..` leaving it, no NUL
    stdin                     string written to the command's standard input
    timeout                   seconds, a number in (0, MAX_COMMAND_TIMEOUT_SECONDS]
    non_retryable_exit_codes  list of whole numbers in [1, 255]
    limits                    object: cpu (seconds), memory (bytes of address space), files
                              (open files), each a whole number of at least 1; they only narrow
                              the executor's own limits

Any other key is refused, so that a misspelt field (`"timout"`) is an error, not ignored.
Violations name the field under the job's path: `job.payload.argv[2]`, `jobs[3].payload.env['X']`.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from scheduler.domain.echo import echo
from scheduler.domain.errors import FieldViolation

COMMAND_TYPE = "command"
MAX_COMMAND_TIMEOUT_SECONDS = 7 * 24 * 3600  # as a job's own timeout (validation.MAX_TIMEOUT)
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV_PREFIX = "JOBSCHED_"
# The dynamic linker's variables (LD_PRELOAD, DYLD_INSERT_LIBRARIES, ...) would let a job run
# code of its choosing inside a program the executor allows.
LINKER_ENV_PREFIXES = ("LD_", "DYLD_")
LIMIT_KEYS = ("cpu", "memory", "files")
FIELDS = frozenset({"argv", "env", "cwd", "stdin", "timeout", "non_retryable_exit_codes", "limits"})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_command_payload(payload: bytes, path: str, violations: list[FieldViolation]) -> None:
    """Append a violation for each problem of a `command` payload; `path` is the payload's
    (`job.payload`)."""
    try:
        body = json.loads(payload, parse_constant=_reject_constant) if payload else None
    except (ValueError, UnicodeDecodeError) as exc:
        violations.append(FieldViolation(path, f"is not valid JSON: {exc}"))
        return
    if not isinstance(body, dict):
        violations.append(
            FieldViolation(path, 'must be a JSON object such as {"argv": ["echo", "hello"]}')
        )
        return
    for key in sorted(set(body) - FIELDS):
        violations.append(
            FieldViolation(
                f"{path}.{key}" if ENV_NAME_PATTERN.fullmatch(key) else f"{path}[{echo(key)}]",
                f"is not a field of a command payload ({', '.join(sorted(FIELDS))})",
            )
        )
    _check_argv(body.get("argv"), f"{path}.argv", violations)
    if "env" in body:
        _check_env(body["env"], f"{path}.env", violations)
    if "cwd" in body:
        _check_cwd(body["cwd"], f"{path}.cwd", violations)
    if "stdin" in body and not isinstance(body["stdin"], str):
        violations.append(FieldViolation(f"{path}.stdin", "must be a string"))
    if "timeout" in body:
        timeout = body["timeout"]
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_COMMAND_TIMEOUT_SECONDS
        ):
            violations.append(
                FieldViolation(
                    f"{path}.timeout",
                    f"must be a number of seconds in (0, {MAX_COMMAND_TIMEOUT_SECONDS}]",
                )
            )
    if "non_retryable_exit_codes" in body:
        _check_exit_codes(
            body["non_retryable_exit_codes"], f"{path}.non_retryable_exit_codes", violations
        )
    if "limits" in body:
        _check_limits(body["limits"], f"{path}.limits", violations)


def _check_argv(argv: object, path: str, violations: list[FieldViolation]) -> None:
    if argv is None:
        violations.append(FieldViolation(path, 'is required: a list of strings, ["echo", "hi"]'))
        return
    if not isinstance(argv, list) or not argv:
        violations.append(FieldViolation(path, "must be a non-empty list of strings"))
        return
    for i, item in enumerate(argv):
        if not isinstance(item, str):
            violations.append(FieldViolation(f"{path}[{i}]", "must be a string"))
        elif "\x00" in item:
            violations.append(FieldViolation(f"{path}[{i}]", "must not contain NUL (U+0000)"))
        elif i == 0 and not item:
            violations.append(FieldViolation(f"{path}[0]", "must name the program to run"))


def _check_env(env: object, path: str, violations: list[FieldViolation]) -> None:
    if not isinstance(env, dict):
        violations.append(FieldViolation(path, "must be an object of string values"))
        return
    for name, value in env.items():
        where = f"{path}[{echo(name)}]"
        if not ENV_NAME_PATTERN.fullmatch(name):
            violations.append(FieldViolation(where, f"name must match {ENV_NAME_PATTERN.pattern}"))
        elif name.upper().startswith(RESERVED_ENV_PREFIX):
            violations.append(
                FieldViolation(where, f"names starting {RESERVED_ENV_PREFIX} are set by jobsched")
            )
        elif name.upper().startswith(LINKER_ENV_PREFIXES):
            violations.append(
                FieldViolation(
                    where,
                    "the dynamic linker's variables (LD_*, DYLD_*) are not allowed: they change "
                    "what an allowed program runs",
                )
            )
        if not isinstance(value, str):
            violations.append(FieldViolation(where, "must be a string"))
        elif "\x00" in value:
            violations.append(FieldViolation(where, "must not contain NUL (U+0000)"))


def _check_cwd(cwd: object, path: str, violations: list[FieldViolation]) -> None:
    if not isinstance(cwd, str):
        violations.append(FieldViolation(path, "must be a string"))
    elif "\x00" in cwd:
        violations.append(FieldViolation(path, "must not contain NUL (U+0000)"))
    elif posixpath.isabs(cwd):
        violations.append(
            FieldViolation(path, f"{echo(cwd)} must be relative to the attempt's working directory")
        )
    elif posixpath.normpath(cwd).split("/")[0] == "..":
        violations.append(
            FieldViolation(path, f"{echo(cwd)} leaves the attempt's working directory")
        )


def _check_exit_codes(codes: object, path: str, violations: list[FieldViolation]) -> None:
    if not isinstance(codes, list):
        violations.append(FieldViolation(path, "must be a list of exit codes"))
        return
    for i, code in enumerate(codes):
        if not _is_int(code) or not 1 <= code <= 255:
            violations.append(FieldViolation(f"{path}[{i}]", "must be a whole number in [1, 255]"))


def _check_limits(limits: object, path: str, violations: list[FieldViolation]) -> None:
    if not isinstance(limits, dict):
        violations.append(
            FieldViolation(path, f"must be an object with any of {', '.join(LIMIT_KEYS)}")
        )
        return
    for key, value in limits.items():
        if key not in LIMIT_KEYS:
            violations.append(
                FieldViolation(f"{path}[{echo(key)}]", f"is not a limit ({', '.join(LIMIT_KEYS)})")
            )
        elif not _is_int(value) or value < 1:
            violations.append(
                FieldViolation(f"{path}.{key}", "must be a whole number of at least 1")
            )
