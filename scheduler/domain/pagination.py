"""Keyset pagination: page sizes and opaque page tokens bound to the filters they were made for.

A token holds the sort key of the last row of a page and a fingerprint of the filters; reusing
it with other filters, or sending one that does not decode, is INVALID_ARGUMENT. Tokens are not
signed: a hand-made one can only start a listing at another position of the same tenant's jobs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.log_lines import LineCursor

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_TOKEN_VERSION = 1
_MAX_TOKEN_CHARS = 512  # real tokens are ~150 characters
_MAX_INT32 = 2**31 - 1  # attempts and line numbers are int32 in the protos and the table


@dataclass(frozen=True, slots=True)
class Cursor:
    """The sort key of the last row of a page: (timestamp, id)."""

    at: datetime
    id: str


def page_size(
    requested: int,
    path: str = "page_size",
    *,
    default: int = DEFAULT_PAGE_SIZE,
    maximum: int = MAX_PAGE_SIZE,
) -> int:
    """0 means the default, larger than the maximum is coerced, negative is rejected."""
    if requested < 0:
        raise InvalidArgument([FieldViolation(path, "must not be negative")])
    if requested == 0:
        return default
    return min(requested, maximum)


def fingerprint(filters: Mapping[str, object]) -> str:
    """A short, stable digest of the filters a page was listed with."""
    canonical = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _pack(body: dict[str, object]) -> str:
    raw = json.dumps({"v": _TOKEN_VERSION, **body}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(token: str, path: str) -> dict[str, Any]:
    """The body of a well-formed token of this version; INVALID_ARGUMENT otherwise."""
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidArgument([FieldViolation(path, "is not a valid page token")])
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict) or body.get("v") != _TOKEN_VERSION:
            raise ValueError("version")
    except (ValueError, RecursionError):
        raise InvalidArgument([FieldViolation(path, "is not a valid page token")]) from None
    return body


def _check_fingerprint(token_fingerprint: object, filters_fingerprint: str, path: str) -> None:
    if token_fingerprint != filters_fingerprint:
        raise InvalidArgument(
            [FieldViolation(path, "was issued for other filters; list again from the first page")]
        )


def encode_token(cursor: Cursor, filters_fingerprint: str) -> str:
    return _pack({"t": cursor.at.isoformat(), "i": cursor.id, "f": filters_fingerprint})


def decode_token(token: str, filters_fingerprint: str, path: str = "page_token") -> Cursor | None:
    """The cursor in `token`, or None for an empty token (the first page)."""
    if not token:
        return None
    body = _unpack(token, path)
    try:
        at = datetime.fromisoformat(body["t"])
        if at.tzinfo is None:
            raise ValueError("naive timestamp")
        cursor = Cursor(at=at, id=str(uuid.UUID(body["i"])))
        token_fingerprint = body["f"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument([FieldViolation(path, "is not a valid page token")]) from None
    _check_fingerprint(token_fingerprint, filters_fingerprint, path)
    return cursor


def encode_line_token(cursor: LineCursor, filters_fingerprint: str) -> str:
    """A page token of a job's log lines: the (attempt, line number) of the page's last line."""
    return _pack({"a": cursor.attempt, "n": cursor.line_number, "f": filters_fingerprint})


def decode_line_token(
    token: str, filters_fingerprint: str, path: str = "page_token"
) -> LineCursor | None:
    """The log-line cursor in `token`, or None for an empty token (the first page)."""
    if not token:
        return None
    body = _unpack(token, path)
    cursor = LineCursor(
        attempt=_int32(body.get("a"), path), line_number=_int32(body.get("n"), path)
    )
    _check_fingerprint(body.get("f"), filters_fingerprint, path)
    return cursor


def _int32(value: object, path: str) -> int:
    # bool is an int subclass: `true` in a hand-made token is not a number
    if type(value) is not int or not 0 <= value <= _MAX_INT32:
        raise InvalidArgument([FieldViolation(path, "is not a valid page token")])
    return value


def encode_name_token(name: str, filters_fingerprint: str) -> str:
    """A page token of a list ordered by name (schedules): the page's last name."""
    return _pack({"n": name, "f": filters_fingerprint})


def decode_name_token(token: str, filters_fingerprint: str, path: str = "page_token") -> str | None:
    """The last name of the previous page, or None for an empty token (the first page)."""
    if not token:
        return None
    body = _unpack(token, path)
    name = body.get("n")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_NAME_CHARS:
        raise InvalidArgument([FieldViolation(path, "is not a valid page token")])
    _check_fingerprint(body.get("f"), filters_fingerprint, path)
    return name


_MAX_NAME_CHARS = 64  # names match NAME_PATTERN
