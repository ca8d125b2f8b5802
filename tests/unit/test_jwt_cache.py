"""The verified-token cache of JwtAuthenticator (scheduler/auth/jwt.py), with a set clock: a
cached token is refused once its exp and the leeway have passed, the cache is bounded, and a
change of the key set empties it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scheduler.auth.jwks import JwksKeys, JwksSource
from scheduler.auth.jwt import JwtAuthenticator, JwtSettings
from scheduler.domain.auth import Role
from scheduler.domain.errors import Unauthenticated
from tests.identities import AUDIENCE, ISSUER, SigningKey, write_jwks

KEY = SigningKey.make("k")


async def verifier(tmp_path: Path, clock: list[float], entries: int = 10) -> JwtAuthenticator:
    path = write_jwks(tmp_path / "jwks.json", KEY)
    settings = JwtSettings(jwks=str(path), issuer=ISSUER, audience=AUDIENCE, leeway=10)
    keys = JwksKeys(JwksSource(str(path)), 300, 30)
    await keys.read()
    jwt = JwtAuthenticator(settings, keys, clock=lambda: clock[0], cache_entries=entries)
    keys.on_change = jwt.forget_all
    return jwt


def no_tenant() -> None:
    return None


async def test_a_cached_token_is_refused_after_its_exp_and_leeway(tmp_path: Path) -> None:
    now = [time.time()]
    jwt = await verifier(tmp_path, now)
    token = KEY.token(["alpha:viewer"], ttl=60)
    principal = await jwt.authenticate(token, no_tenant)
    assert (principal.kind, principal.id, principal.role) == ("jwt", "alice", Role.VIEWER)
    assert principal.expires_at is not None
    assert principal.expires_at.timestamp() == pytest.approx(now[0] + 70, abs=2)
    now[0] += 65  # past exp, within the leeway
    await jwt.authenticate(token, no_tenant)
    assert jwt.verifications == 1
    now[0] += 10
    with pytest.raises(Unauthenticated) as raised:
        await jwt.authenticate(token, no_tenant)
    assert raised.value.reason == "CREDENTIAL_EXPIRED"


async def test_the_cache_is_bounded_and_emptied_when_the_keys_change(tmp_path: Path) -> None:
    now = [time.time()]
    jwt = await verifier(tmp_path, now, entries=3)
    tokens = [KEY.token(sub=f"user-{i}") for i in range(5)]
    for token in tokens:
        await jwt.authenticate(token, no_tenant)
    assert jwt.verifications == 5
    await jwt.authenticate(tokens[-1], no_tenant)
    assert jwt.verifications == 5  # the newest are kept
    await jwt.authenticate(tokens[0], no_tenant)
    assert jwt.verifications == 6  # the oldest were dropped
    write_jwks(tmp_path / "jwks.json", KEY, SigningKey.make("rotated"))
    await jwt.keys.read()
    await jwt.authenticate(tokens[-1], no_tenant)
    assert jwt.verifications == 7
