"""Page sizes and opaque page tokens bound to the filters they were issued for."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.log_lines import LineCursor
from scheduler.domain.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Cursor,
    decode_line_token,
    decode_token,
    encode_line_token,
    encode_token,
    fingerprint,
    page_size,
)

AT = datetime(2025, 3, 14, 12, 0, 0, 123456, tzinfo=UTC)
JOB_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
FILTERS = {"queue": "default", "states": ["queued", "running"], "tenant": "acme"}
FP = fingerprint(FILTERS)
CURSOR = Cursor(at=AT, id=JOB_ID)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_of(body: object) -> str:
    return b64(json.dumps(body).encode())


def good_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {"v": 1, "t": AT.isoformat(), "i": JOB_ID, "f": FP}
    body.update(overrides)
    return body


def rejected(token: str, fp: str = FP, path: str = "page_token") -> FieldViolation:
    with pytest.raises(InvalidArgument) as exc:
        decode_token(token, fp, path)
    [violation] = exc.value.violations
    return violation


# --- page_size ------------------------------------------------------------------------------


def test_documented_limits():
    assert DEFAULT_PAGE_SIZE == 100
    assert MAX_PAGE_SIZE == 1000


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0, 100), (1, 1), (50, 50), (100, 100), (999, 999), (1000, 1000), (1001, 1000), (5000, 1000)],
)
def test_page_size(requested, expected):
    assert page_size(requested) == expected


def test_huge_page_size_is_coerced():
    assert page_size(2**63 - 1) == 1000


@pytest.mark.parametrize("requested", [-1, -100, -(2**31)])
def test_negative_page_size_is_rejected(requested):
    with pytest.raises(InvalidArgument) as exc:
        page_size(requested)
    [violation] = exc.value.violations
    assert violation.field == "page_size"
    assert "negative" in violation.description
    assert "page_size" in str(exc.value)


def test_page_size_path_is_configurable():
    with pytest.raises(InvalidArgument) as exc:
        page_size(-1, path="history.page_size")
    assert exc.value.violations[0].field == "history.page_size"


# --- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_is_16_hex_characters():
    assert re.fullmatch(r"[0-9a-f]{16}", FP)


def test_fingerprint_is_stable_under_key_order():
    a = {"tenant": "acme", "queue": "default", "states": ["queued", "running"]}
    b = {"states": ["queued", "running"], "queue": "default", "tenant": "acme"}
    assert list(a) != list(b)
    assert fingerprint(a) == fingerprint(b) == FP


def test_fingerprint_is_stable_under_nested_key_order():
    a = {"labels": {"env": "prod", "team": "core"}, "queue": "q"}
    b = {"queue": "q", "labels": {"team": "core", "env": "prod"}}
    assert fingerprint(a) == fingerprint(b)


def test_fingerprint_is_sha256_of_canonical_json():
    canonical = '{"queue":"default","states":["queued","running"],"tenant":"acme"}'
    assert hashlib.sha256(canonical.encode()).hexdigest()[:16] == FP


def test_fingerprint_is_deterministic():
    assert fingerprint(dict(FILTERS)) == fingerprint(dict(FILTERS))


@pytest.mark.parametrize(
    "other",
    [
        {"queue": "other", "states": ["queued", "running"], "tenant": "acme"},
        {"queue": "default", "states": ["running", "queued"], "tenant": "acme"},
        {"queue": "default", "states": ["queued"], "tenant": "acme"},
        {"queue": "default", "states": ["queued", "running"], "tenant": "evil"},
        {"queue": "default", "states": ["queued", "running"]},
        {"queue": "default", "states": ["queued", "running"], "tenant": "acme", "type": "x"},
        {"queue": "default", "states": ["queued", "running"], "tenant": None},
        {},
    ],
)
def test_fingerprint_differs_for_other_filters(other):
    assert fingerprint(other) != FP


def test_fingerprint_distinguishes_types():
    assert fingerprint({"n": 1}) != fingerprint({"n": "1"})
    assert fingerprint({"n": None}) != fingerprint({})


def test_fingerprint_accepts_datetimes():
    a = fingerprint({"created_after": AT})
    assert a == fingerprint({"created_after": AT})
    assert a != fingerprint({"created_after": AT + timedelta(microseconds=1)})


# --- tokens ---------------------------------------------------------------------------------


def test_round_trip():
    token = encode_token(CURSOR, FP)
    assert decode_token(token, FP) == CURSOR


@pytest.mark.parametrize(
    "cursor",
    [
        Cursor(at=AT, id=JOB_ID),
        Cursor(at=datetime(1970, 1, 1, tzinfo=UTC), id="00000000-0000-0000-0000-000000000000"),
        Cursor(
            at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            id="ffffffff-ffff-ffff-ffff-ffffffffffff",
        ),
        Cursor(
            at=datetime(2025, 1, 1, 8, 30, tzinfo=timezone(timedelta(hours=-5))),
            id="0189a8a1-7f0c-7c3e-9d2b-4c1e2f3a4b5c",
        ),
    ],
    ids=["uuid", "epoch", "max", "offset"],
)
def test_round_trip_preserves_instant_offset_and_id(cursor):
    decoded = decode_token(encode_token(cursor, FP), FP)
    assert decoded == cursor
    assert decoded is not None
    assert decoded.at.utcoffset() == cursor.at.utcoffset()


def test_token_is_url_safe_and_unpadded():
    for cursor in (CURSOR, Cursor(at=AT, id="?" * 7), Cursor(at=AT, id="\xff" * 5)):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", encode_token(cursor, FP))


def test_token_is_deterministic():
    assert encode_token(CURSOR, FP) == encode_token(Cursor(at=AT, id=JOB_ID), FP)


def test_tokens_differ_by_cursor_and_fingerprint():
    base = encode_token(CURSOR, FP)
    assert encode_token(Cursor(at=AT, id="other"), FP) != base
    assert encode_token(Cursor(at=AT + timedelta(microseconds=1), id=JOB_ID), FP) != base
    assert encode_token(CURSOR, fingerprint({})) != base


@pytest.mark.parametrize("fp", [FP, "", "anything"])
def test_empty_token_is_the_first_page(fp):
    assert decode_token("", fp) is None


def test_token_for_other_filters_is_rejected():
    token = encode_token(CURSOR, FP)
    other = fingerprint({**FILTERS, "queue": "other"})
    violation = rejected(token, fp=other)
    assert violation.field == "page_token"
    assert "other filters" in violation.description


def test_token_with_a_tampered_fingerprint_is_rejected():
    violation = rejected(token_of(good_body(f="0" * 16)))
    assert "other filters" in violation.description


def test_handmade_token_of_the_right_shape_is_accepted():
    # The format is documented by the round trip; this pins that decode reads exactly it.
    assert decode_token(token_of(good_body()), FP) == CURSOR


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "not a token",
        "!!!!",
        "a",
        "é",
        "AA\x00",
        "=" * 8,
        b64(b"not json"),
        b64(b"\xff\xfe\xfd"),
        b64(b"{"),
        b64(b"null"),
        b64(b"42"),
        b64(b'"string"'),
        b64(b"[1, 2, 3]"),
        b64(b"NaN"),
        token_of({}),
        token_of({k: v for k, v in good_body().items() if k != "v"}),
        token_of({k: v for k, v in good_body().items() if k != "t"}),
        token_of({k: v for k, v in good_body().items() if k != "i"}),
        token_of({k: v for k, v in good_body().items() if k != "f"}),
        token_of(good_body(v=2)),
        token_of(good_body(v=0)),
        token_of(good_body(v="1")),
        token_of(good_body(v=None)),
        token_of(good_body(t="yesterday")),
        token_of(good_body(t="2025-13-40T00:00:00+00:00")),
        token_of(good_body(t="")),
        token_of(good_body(t=1741953600)),
        token_of(good_body(t=None)),
        token_of(good_body(t=["2025-03-14"])),
    ],
    ids=lambda t: t[:24],
)
def test_garbage_token_is_rejected(token):
    violation = rejected(token)
    assert violation.field == "page_token"
    assert "not a valid page token" in violation.description


def test_rejection_message_names_page_token():
    with pytest.raises(InvalidArgument) as exc:
        decode_token("garbage", FP)
    assert "page_token" in str(exc.value)
    assert exc.value.reason == "INVALID_ARGUMENT"


def test_garbage_token_is_rejected_before_the_fingerprint_is_compared():
    # A broken token is reported as broken, not as "issued for other filters".
    violation = rejected("garbage", fp="other")
    assert "not a valid page token" in violation.description


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 10])
def test_truncated_token_is_rejected(cut):
    token = encode_token(CURSOR, FP)
    violation = rejected(token[:-cut])
    assert violation.field == "page_token"


def test_token_with_a_corrupted_first_character_is_rejected():
    token = encode_token(CURSOR, FP)
    assert token.startswith("eyJ")  # base64 of '{"'
    rejected("A" + token[1:])


def test_token_with_appended_bytes_is_rejected():
    token = encode_token(CURSOR, FP)
    rejected(b64(base64.urlsafe_b64decode(token + "==") + b"xx"))


def test_reversed_token_is_rejected():
    rejected(encode_token(CURSOR, FP)[::-1])


def test_token_path_is_configurable():
    violation = rejected("garbage", path="request.page_token")
    assert violation.field == "request.page_token"
    other = rejected(encode_token(CURSOR, FP), fp="other", path="request.page_token")
    assert other.field == "request.page_token"


def test_deeply_nested_token_is_rejected():
    rejected(b64(b"[" * 100_000 + b"]" * 100_000))


def test_cursor_is_an_immutable_value():
    assert Cursor(at=AT, id="a") == Cursor(at=AT, id="a")
    assert Cursor(at=AT, id="a") != Cursor(at=AT, id="b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        CURSOR.id = "other"  # type: ignore[misc]


# -- log-line tokens: (attempt, line number) cursors -------------------------------------------


def test_line_tokens_round_trip() -> None:
    cursor = LineCursor(attempt=2, line_number=1001)
    token = encode_line_token(cursor, FP)
    assert decode_line_token(token, FP) == cursor
    assert decode_line_token("", FP) is None


def test_a_line_token_is_bound_to_its_filters() -> None:
    token = encode_line_token(LineCursor(1, 5), FP)
    with pytest.raises(InvalidArgument) as caught:
        decode_line_token(token, fingerprint({"attempt": 2}))
    assert caught.value.violations[0].field == "page_token"
    assert "other filters" in caught.value.violations[0].description


@pytest.mark.parametrize(
    "body",
    [
        {"v": 1, "a": 1, "f": FP},  # no line number
        {"v": 1, "a": "1", "n": 1, "f": FP},
        {"v": 1, "a": 1, "n": True, "f": FP},
        {"v": 1, "a": -1, "n": 1, "f": FP},
        {"v": 1, "a": 1, "n": 2**31, "f": FP},
        {"v": 1, "a": 1.5, "n": 1, "f": FP},
        {"v": 2, "a": 1, "n": 1, "f": FP},
        [1, 2],
        "a string",
    ],
)
def test_malformed_line_tokens_are_invalid_arguments(body: object) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_line_token(token_of(body), FP, path="page_token")
    assert caught.value.violations == [FieldViolation("page_token", "is not a valid page token")]


def test_a_job_list_token_is_not_a_line_token_and_vice_versa() -> None:
    with pytest.raises(InvalidArgument):
        decode_line_token(encode_token(CURSOR, FP), FP)
    with pytest.raises(InvalidArgument):
        decode_token(encode_line_token(LineCursor(1, 1), FP), FP)
    with pytest.raises(InvalidArgument):
        decode_line_token("!!!not base64", FP)
