"""Verifying API keys, with a short cache of verified keys.

A presented key is checked for its format (no query for garbage), hashed, found by its digest
and compared with the stored digest in constant time. Verified keys are kept CACHE_SECONDS
(5 s): GetJobStatus does not pay a query per call, and a revocation made on another replica
takes effect there within that bound (on the replica that revoked it, at once: `forget`).
Expiry is checked against the clock on every call, cached or not. Unknown keys are not cached
(a key is random: one never seen before cannot be looked up by anyone but its guesser)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from scheduler.domain.auth import (
    ApiKeyRecord,
    Principal,
    check_key_format,
    key_digest,
    same_digest,
)
from scheduler.domain.errors import Unauthenticated
from scheduler.store.api_keys import ApiKeyStore

CACHE_SECONDS = 5.0
CACHE_ENTRIES = 10_000


class ApiKeyAuthenticator:
    def __init__(
        self,
        store: ApiKeyStore,
        clock: Callable[[], datetime],
        *,
        cache_seconds: float = CACHE_SECONDS,
        cache_entries: int = CACHE_ENTRIES,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.cache_entries = cache_entries
        # digest -> (record, time.monotonic() until which it may be used without a query)
        self._cache: OrderedDict[bytes, tuple[ApiKeyRecord, float]] = OrderedDict()
        self.lookups = 0  # store queries made (tests read it to see the cache work)

    async def authenticate(self, key: str) -> Principal:
        check_key_format(key)
        digest = key_digest(key)
        record = self._cached(digest)
        if record is None:
            self.lookups += 1
            record = await self.store.by_digest(digest)
            if record is None or not same_digest(record.digest, digest):
                raise Unauthenticated("CREDENTIAL_UNKNOWN", "the API key is not known")
            self._remember(digest, record)
        record.check_usable(self.clock())
        return record.principal()

    def verified_recently(self, key: str) -> bool:
        """Whether `key` is a key verified within the cache's lifetime (no query, no expiry
        check: a hint for the failed-authentication gate, never a grant)."""
        return self._cached(key_digest(key)) is not None

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache (it was revoked here)."""
        for digest in [d for d, (r, _) in self._cache.items() if r.id == key_id]:
            del self._cache[digest]

    def _cached(self, digest: bytes) -> ApiKeyRecord | None:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            del self._cache[digest]
            return None
        return entry[0]

    def _remember(self, digest: bytes, record: ApiKeyRecord) -> None:
        self._cache[digest] = (record, time.monotonic() + self.cache_seconds)
        self._cache.move_to_end(digest)
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)
