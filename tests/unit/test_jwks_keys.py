"""The JWKS key set (scheduler/auth/jwks.py) on a real file with a set clock: an unknown kid
reads the set again at most once per min_refresh, concurrent look-ups share one read, a failed
read keeps the keys held, and symmetric or non-signature keys are never taken."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from scheduler.auth.jwks import JwksError, JwksKeys, JwksSource, parse_jwks
from tests.identities import SigningKey, write_jwks

FIRST = SigningKey.make("first")
SECOND = SigningKey.make("second")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_unknown_kid_reads_again_at_most_once_per_min_refresh(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", FIRST)
    clock = Clock()
    changes: list[int] = []
    keys = JwksKeys(
        JwksSource(str(path)), 300, 30, on_change=lambda: changes.append(1), monotonic=clock
    )
    await keys.start()
    try:
        assert keys.reads == 1
        assert keys.get("first") is not None
        write_jwks(path, FIRST, SECOND)
        assert await keys.find("second") is None  # read 0 s ago: not again
        clock.now += 29
        assert await keys.find("second") is None
        assert keys.reads == 1
        clock.now += 2
        found = await asyncio.gather(*(keys.find("second") for _ in range(20)))
        assert all(key is not None and key["kid"] == "second" for key in found)
        assert keys.reads == 2  # twenty look-ups, one read
        assert await keys.find("third") is None  # just read: rate-limited
        assert keys.reads == 2
        assert changes == [1, 1]
    finally:
        await keys.stop()


async def test_a_failed_read_keeps_the_keys_held(tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "jwks.json", FIRST)
    clock = Clock()
    keys = JwksKeys(JwksSource(str(path)), 300, 0, monotonic=clock)
    await keys.read()
    path.write_text("not json")
    await keys.read()
    path.unlink()
    await keys.read()
    assert keys.reads == 3
    assert keys.get("first") is not None
    assert keys.get(None) is keys.get("first")  # no kid: the only key there is


def test_symmetric_and_encryption_keys_are_dropped() -> None:
    document = {
        "keys": [
            FIRST.jwk(),
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**SECOND.jwk(), "use": "enc"},
        ]
    }
    assert list(parse_jwks(json.dumps(document).encode(), "x")) == ["first"]


@pytest.mark.parametrize(
    "data", [b"[]", b'{"keys": {}}', b'{"keys": [1]}', b'{"keys": [{"kid": "a"}]}', b"\xff"]
)
def test_what_is_not_a_jwks_is_an_error_naming_the_source(data: bytes) -> None:
    with pytest.raises(JwksError, match=r"^idp\.json: "):
        parse_jwks(data, "idp.json")


def test_plain_http_beyond_loopback_is_called_tamperable() -> None:
    assert JwksSource("http://idp.internal:8080/jwks").tamperable
    assert JwksSource("http://10.0.0.7/jwks").tamperable
    for safe in ("https://idp.example/jwks", "http://127.0.0.1:9/jwks", "http://localhost/j"):
        assert not JwksSource(safe).tamperable
    assert not JwksSource("/etc/jobsched/jwks.json").tamperable
