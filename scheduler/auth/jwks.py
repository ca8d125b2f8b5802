"""The JSON Web Key Set that JWTs are verified against: read from a file or fetched from an
http(s) URL, kept in memory, and read again (a start/stop service) every `refresh` seconds and
when a token names a key id it does not hold (an identity provider rotating its keys publishes
the new one before signing with it).

Reading again on an unknown key id is rate-limited: at most once per `min_refresh` seconds,
and concurrent calls share the one read in flight, so a flood of tokens with made-up key ids
costs the identity provider one request per `min_refresh`, not one per call. A read that fails
(unreachable, not a JWKS) keeps the keys held and logs a warning; the first read, at start, is
the same (the scheduler serves, and tokens are refused as JWT_KEY_UNKNOWN until a read works).

Symmetric keys (`kty: oct`) and keys not meant for signatures (`use` other than `sig`) are
skipped: a public key set has no business holding a shared secret, and an HMAC key must never
verify a token (no algorithm confusion).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("jobsched.auth")

MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT = 5.0
NO_KID = ""  # the key of a set whose keys have no "kid"

Jwk = dict[str, Any]


class JwksError(ValueError):
    """The JWKS cannot be read or is not a JSON Web Key Set."""


def parse_jwks(data: bytes, where: str) -> dict[str, Jwk]:
    """kid -> key of the signature keys in a JWKS document (JwksError naming `where`)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"{where}: not JSON: {exc}") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksError(f"{where}: not a JSON Web Key Set (an object with a 'keys' list)")
    found: dict[str, Jwk] = {}
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            raise JwksError(f"{where}: every key must be an object with a 'kty'")
        if key["kty"] == "oct" or key.get("use", "sig") != "sig":
            continue
        kid = key.get("kid", NO_KID)
        found[str(kid)] = key
    return found


@dataclass(frozen=True, slots=True)
class JwksSource:
    """Where the JWKS is: an http:// or https:// URL, else a file path."""

    location: str

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("https://", "http://"))

    @property
    def tamperable(self) -> bool:
        """Fetched over plain http from beyond this machine: anyone on the path can swap the
        keys, and so sign any token."""
        if not self.location.startswith("http://"):
            return False
        host = urllib.parse.urlsplit(self.location).hostname or ""
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True

    def read(self) -> dict[str, Jwk]:
        """The keys now (blocking: run in a thread). JwksError when they cannot be read."""
        if self.is_url:
            request = urllib.request.Request(
                self.location, headers={"Accept": "application/json", "User-Agent": "jobsched"}
            )
            try:
                with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
                    data = response.read(MAX_JWKS_BYTES + 1)
            except (OSError, ValueError) as exc:
                raise JwksError(f"{self.location}: cannot be fetched: {exc}") from None
        else:
            try:
                with Path(self.location).open("rb") as handle:
                    data = handle.read(MAX_JWKS_BYTES + 1)
            except OSError as exc:
                raise JwksError(f"{self.location}: cannot be read: {exc.strerror}") from None
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError(f"{self.location}: larger than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(data, self.location)


class JwksKeys:
    """The keys held, and the service that reads them again (see the module docstring)."""

    def __init__(
        self,
        source: JwksSource,
        refresh: float,
        min_refresh: float,
        *,
        on_change: Callable[[], None] = lambda: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.refresh_interval = refresh
        self.min_refresh = min_refresh
        self.on_change = on_change
        self.monotonic = monotonic
        self.keys: dict[str, Jwk] = {}
        self.reads = 0  # reads attempted (tests and the benchmark look at it)
        self._last_read: float | None = None
        self._reading: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.source.tamperable:
            log.warning(
                "the JWKS is fetched over plain http: whoever can change it in transit can sign "
                "tokens; use https",
                extra={"fields": {"event": "auth.jwks_insecure", "source": self.source.location}},
            )
        await self.read()
        self._task = asyncio.create_task(self._run(), name="jwks-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading

    def get(self, kid: str | None) -> Jwk | None:
        """The key a token's header names; a token without a kid uses the only key there is."""
        if kid is None:
            if NO_KID in self.keys:
                return self.keys[NO_KID]
            return next(iter(self.keys.values())) if len(self.keys) == 1 else None
        return self.keys.get(kid)

    async def find(self, kid: str | None) -> Jwk | None:
        """The key, read again first if it is not held and the rate limit allows."""
        key = self.get(kid)
        if key is not None:
            return key
        if self._reading is None:
            last = self._last_read
            if last is not None and self.monotonic() - last < self.min_refresh:
                return None
        await self.read()
        return self.get(kid)

    async def read(self) -> None:
        """Read the keys again (or wait for the read in flight)."""
        reading = self._reading
        if reading is None:
            self._last_read = self.monotonic()
            reading = self._reading = asyncio.create_task(self._read(), name="jwks-read")
            reading.add_done_callback(self._read_done)
        await asyncio.shield(reading)

    def _read_done(self, reading: asyncio.Task[None]) -> None:
        if self._reading is reading:
            self._reading = None

    async def _read(self) -> None:
        self.reads += 1
        try:
            keys = await asyncio.to_thread(self.source.read)
        except JwksError as exc:
            log.warning(
                "JWKS not read; the keys held stay in use",
                extra={"fields": {"event": "auth.jwks_read_failed", "error": str(exc)}},
            )
            return
        if keys != self.keys:
            self.keys = keys
            self.on_change()
            log.info(
                "JWKS read",
                extra={
                    "fields": {
                        "event": "auth.jwks_changed",
                        "source": self.source.location,
                        "kids": sorted(keys),
                    }
                },
            )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            await self.read()
