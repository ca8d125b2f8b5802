"""Rate limits: token buckets per principal, the policy saying how large each is, and the
bounded table that holds them. Pure: time comes from the caller (`now`, seconds of a
monotonic clock), so tests set it instead of sleeping.

A `RateLimit` is RATE calls per second with a BURST (a bucket of BURST tokens, refilled at RATE
per second; each call takes one). The `RateLimitPolicy` picks the limit of a call: the tenant's
override when the call acts for a tenant that has one, else its role's; a role or tenant set to
"off" is not limited. With authentication off, callers are told apart by peer address under the
pseudo-role `anonymous`, unlimited by default (auth off serves loopback, or a network something
else guards, unless --insecure); failed authentications are counted per peer address under the
pseudo-role `unauthenticated`. Concurrent streams have a limit per role too.

Buckets live in a `BucketTable`: an idle bucket refills to full, and a full bucket is the same as
no bucket, so buckets full at `now` are dropped as the table is used (oldest first), and past
`max_buckets` the least recently used one goes even if not full (it comes back full: a lenient
failure, never a refusal). Memory is therefore bounded by the principals active within a
bucket's refill time, and by `max_buckets` in any case.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from scheduler.domain.auth import Role

ANONYMOUS = "anonymous"  # the pseudo-role of callers when authentication is off
# The pseudo-role of failed authentications, counted per peer address (with --auth required):
# once a host's bucket is empty, its calls without a recently verified key are refused before
# any lookup, so a flood of guessed keys costs no query each.
UNAUTHENTICATED = "unauthenticated"
OFF = "off"
# The keys of the role tables: the roles, the callers of a scheduler without authentication,
# and failed authentications.
LIMITED_ROLES = (*(role.value for role in Role), ANONYMOUS, UNAUTHENTICATED)

DEFAULT_MAX_BUCKETS = 100_000
# Refills are float sums: a token 1e-15 short is a token (else a caller told "retry in 0.1 s"
# would be refused once more at exactly 0.1 s).
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate` calls per second, at most `burst` at once."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate must be a positive number of calls per second, not {self.rate}")
        if self.burst < 1:
            raise ValueError(f"burst must be at least 1, not {self.burst}")

    def __str__(self) -> str:
        return f"{self.rate:g}/{self.burst}"


def parse_rate(text: str) -> RateLimit | None:
    """RATE[/BURST] (calls per second; BURST defaults to twice RATE, at least 1) or "off"
    (None: not limited). ValueError naming what is wrong."""
    text = text.strip().lower()
    if text == OFF:
        return None
    rate_text, slash, burst_text = text.partition("/")
    try:
        rate = float(rate_text)
    except ValueError:
        raise ValueError(f"{text!r} is not RATE[/BURST] (calls per second) or off") from None
    if slash:
        if not burst_text.isdigit():
            raise ValueError(f"{text!r}: BURST must be a whole number of calls")
        burst = int(burst_text)
    else:
        burst = max(1, math.ceil(2 * rate)) if rate > 0 and math.isfinite(rate) else 0
    return RateLimit(rate, burst)


def parse_assignment(text: str, what: str) -> tuple[str, str]:
    """NAME=VALUE, NAME lower-cased; ValueError naming `what` NAME is."""
    name, equals, value = text.partition("=")
    name = name.strip().lower()
    if not equals or not name or not value.strip():
        raise ValueError(f"{text!r} is not {what}=VALUE")
    return name, value.strip()


def parse_role_name(name: str) -> str:
    if name not in LIMITED_ROLES:
        raise ValueError(f"{name!r} is not a role (one of {', '.join(LIMITED_ROLES)})")
    return name


# Defaults per role. A Python scheduler replica serves some 2,000 unary calls a second on two
# cores: 1,000 a second per principal keeps one principal from taking all of it and is far
# above a person's or a script's honest use. Executors share one key across a fleet: they
# may hold many streams; a watcher principal, a hundred.
DEFAULT_RATE = RateLimit(1000, 2000)
DEFAULT_ROLE_RATES: Mapping[str, RateLimit | None] = {
    **{role.value: DEFAULT_RATE for role in Role},
    ANONYMOUS: None,
    UNAUTHENTICATED: RateLimit(10, 50),  # a misconfigured client retrying is far below
}
DEFAULT_STREAMS = 100
DEFAULT_ROLE_STREAMS: Mapping[str, int | None] = {
    **{role.value: DEFAULT_STREAMS for role in Role},
    Role.EXECUTOR.value: 1000,
    ANONYMOUS: None,
    UNAUTHENTICATED: None,  # never holds a stream
}


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    """How fast each caller may call, and how many streams it may hold open at once."""

    role_rates: Mapping[str, RateLimit | None] = field(
        default_factory=lambda: dict(DEFAULT_ROLE_RATES)
    )
    tenant_rates: Mapping[str, RateLimit | None] = field(default_factory=dict)
    role_streams: Mapping[str, int | None] = field(
        default_factory=lambda: dict(DEFAULT_ROLE_STREAMS)
    )

    @classmethod
    def parse(
        cls,
        rate_limits: Iterable[str] = (),
        tenant_rate_limits: Iterable[str] = (),
        stream_limits: Iterable[str] = (),
    ) -> RateLimitPolicy:
        """The defaults, changed by ROLE=RATE[/BURST]|off, TENANT=RATE[/BURST]|off and
        ROLE=COUNT|off assignments (the flags' text). ValueError naming the bad one."""
        role_rates = dict(DEFAULT_ROLE_RATES)
        for text in rate_limits:
            name, value = parse_assignment(text, "ROLE")
            role_rates[parse_role_name(name)] = parse_rate(value)
        tenant_rates: dict[str, RateLimit | None] = {}
        for text in tenant_rate_limits:
            name, value = parse_assignment(text, "TENANT")
            tenant_rates[name] = parse_rate(value)
        role_streams = dict(DEFAULT_ROLE_STREAMS)
        for text in stream_limits:
            name, value = parse_assignment(text, "ROLE")
            role_streams[parse_role_name(name)] = _parse_count(value)
        return cls(role_rates, tenant_rates, role_streams)

    def rate_for(self, role: str, tenant: str | None) -> tuple[str, RateLimit | None]:
        """(the bucket's scope, the limit) of a call by `role` acting for `tenant`: a tenant
        with an override is a scope of its own; every other call of a principal shares one."""
        if tenant is not None and tenant in self.tenant_rates:
            return tenant, self.tenant_rates[tenant]
        return "", self.role_rates.get(role)

    def streams_for(self, role: str) -> int | None:
        return self.role_streams.get(role)

    @property
    def limits_anonymous(self) -> bool:
        """Whether callers without a principal (auth off) have any limit at all."""
        return bool(
            self.tenant_rates
            or self.role_rates.get(ANONYMOUS) is not None
            or self.role_streams.get(ANONYMOUS) is not None
        )


def _parse_count(text: str) -> int | None:
    text = text.strip().lower()
    if text == OFF:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a number of streams (at least 1) or off")
    return int(text)


@dataclass(slots=True)
class TokenBucket:
    limit: RateLimit
    tokens: float
    updated: float  # the `now` of the last refill

    @classmethod
    def full(cls, limit: RateLimit, now: float) -> TokenBucket:
        return cls(limit, float(limit.burst), now)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(
                float(self.limit.burst), self.tokens + (now - self.updated) * self.limit.rate
            )
            self.updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when one was there, else the seconds until one will be (nothing
        is taken then: a refused call costs the caller no future call)."""
        self._refill(now)
        if self.tokens >= 1.0 - _EPSILON:
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.limit.rate

    def wait(self, now: float) -> float:
        """What `take` would answer, taking nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 - _EPSILON else (1.0 - self.tokens) / self.limit.rate

    def is_full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.limit.burst - _EPSILON


class BucketTable:
    """The buckets of the callers seen recently, bounded (see the module docstring)."""

    def __init__(self, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: tuple[str, str], limit: RateLimit, now: float) -> float:
        """Take a token from the bucket of `key` (made full if absent or its limit changed):
        0.0 if allowed, else the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None or bucket.limit != limit:
            bucket = TokenBucket.full(limit, now)
            self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        wait = bucket.take(now)
        self._evict(now)
        return wait

    def wait(self, key: tuple[str, str], limit: RateLimit, now: float) -> float:
        """The seconds until `key` has a token (0.0: it has one), taking nothing."""
        bucket = self._buckets.get(key)
        return 0.0 if bucket is None or bucket.limit != limit else bucket.wait(now)

    def _evict(self, now: float) -> None:
        # Least recently used first: once one is not yet full, the later ones (used since)
        # are unlikely to be; a sweep stops there, so a call costs O(1) amortised.
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) <= self.max_buckets and not oldest.is_full(now):
                break
            del self._buckets[key]
