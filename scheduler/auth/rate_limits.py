"""The interceptor that holds each caller to its rate limit and its limit of open streams.

It runs inside the AuthInterceptor (scheduler/server.py), so the caller is the principal of
the call (its kind and id: each API key has buckets of its own, whatever its name); with
authentication off, the peer's address (host, without the port) under the pseudo-role
`anonymous`. Every call but health checks and reflection takes a token from the caller's
bucket (scheduler/domain/rate_limits.py: the limit is the role's, or the override of the
tenant the call acts for); every call that streams (WatchJob, WatchJobs, ExecutorService.Connect,
uploads) also holds one of the caller's stream slots while it lasts. Over either, the call is
refused before it runs: RESOURCE_EXHAUSTED with ErrorInfo RATE_LIMITED (RetryInfo: when the
next token comes) or TOO_MANY_STREAMS (RetryInfo: 1 s), counted, and logged as a warning at
most every `log_interval` seconds per kind. Limits are per replica: N replicas behind a load
balancer let a caller make up to N times its rate.

`FailedAuthGate` runs outside the AuthInterceptor (with --auth required): each failed
authentication takes a token from its peer host's `unauthenticated` bucket, and while that is
empty the host's calls are refused RATE_LIMITED before authentication, unless they carry a key
verified within the authenticator's cache lifetime (so a guessing flood costs no lookup each,
and a good client on the same host carries on).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from scheduler.api.interceptors import Handler, WrappingInterceptor, wrap_handler
from scheduler.auth.credentials import CredentialAuthenticator
from scheduler.auth.identity import current_principal, requested_tenant
from scheduler.auth.permissions import is_public
from scheduler.domain.errors import (
    InvalidArgument,
    RateLimited,
    TooManyStreams,
    Unauthenticated,
)
from scheduler.domain.rate_limits import (
    ANONYMOUS,
    DEFAULT_MAX_BUCKETS,
    UNAUTHENTICATED,
    BucketTable,
    RateLimitPolicy,
)

log = logging.getLogger("jobsched.rpc")

STREAM_RETRY_AFTER = 1.0
_MIN_RETRY_AFTER = 0.001  # RetryInfo carries milliseconds: never tell a caller "retry in 0"


def peer_host(peer: str) -> str:
    """The address of a grpc peer string without its port ("ipv4:10.0.0.7:51234" ->
    "ipv4:10.0.0.7", "ipv6:[::1]:5000" -> "ipv6:[::1]"): one bucket per host, not per
    connection (a flooder opens connections at will)."""
    kind, colon, rest = peer.partition(":")
    if not colon or kind not in {"ipv4", "ipv6"}:
        return peer
    host, colon, port = rest.rpartition(":")
    return f"{kind}:{host}" if colon and port.isdigit() else peer


class _Caller:
    __slots__ = ("key", "role", "tenant")

    def __init__(self, key: str, role: str, tenant: str | None) -> None:
        self.key = key
        self.role = role
        self.tenant = tenant


def caller_of(context: grpc.aio.ServicerContext[Any, Any]) -> _Caller:
    try:
        requested = requested_tenant(context)
    except InvalidArgument:
        requested = None  # the servicer refuses the header itself, where it reads it
    principal = current_principal()
    if principal is None:
        return _Caller(f"peer {peer_host(context.peer())}", ANONYMOUS, requested)
    tenant = requested
    if tenant is None and len(principal.tenants) == 1 and not principal.all_tenants:
        tenant = next(iter(principal.tenants))
    return _Caller(f"{principal.kind}:{principal.id}", principal.role.value, tenant)


class RateLimiter(WrappingInterceptor):
    def __init__(
        self,
        policy: RateLimitPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = DEFAULT_MAX_BUCKETS,
        log_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.policy = policy or RateLimitPolicy()
        self.clock = clock
        self.buckets = BucketTable(max_buckets)
        self.streams: dict[str, int] = {}  # caller key -> streams open (no entry at zero)
        self.log_interval = log_interval
        self.refused_calls = 0  # since start
        self.refused_streams = 0
        self._logged_at: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def wrap(self, method: str, handler: Handler) -> Handler:
        if is_public(method):
            return handler
        streaming = handler.unary_unary is None
        return wrap_handler(handler, method, lambda m, c: _Limited(self, m, c, streaming))

    def admit(self, caller: _Caller, method: str) -> None:
        scope, limit = self.policy.rate_for(caller.role, caller.tenant)
        if limit is None:
            return
        wait = self.buckets.take((caller.key, scope), limit, self.clock())
        if wait > 0:
            self.refused_calls += 1
            wait = max(wait, _MIN_RETRY_AFTER)
            self._warn("rpc.rate_limited", caller, method, {"limit": str(limit)})
            raise RateLimited(
                f"too many calls: this caller may make {limit.rate:g} a second (bursts of "
                f"{limit.burst}); retry in {wait:.3g} s",
                retry_after=wait,
            )

    def open_stream(self, caller: _Caller, method: str) -> bool:
        """Take a stream slot of the caller: True if one must be given back (a limit applies)."""
        limit = self.policy.streams_for(caller.role)
        if limit is None:
            return False
        held = self.streams.get(caller.key, 0)
        if held >= limit:
            self.refused_streams += 1
            self._warn("rpc.too_many_streams", caller, method, {"limit": limit})
            raise TooManyStreams(
                f"too many streams: this caller may hold {limit} open at once; close one, or "
                f"retry in {STREAM_RETRY_AFTER:g} s",
                retry_after=STREAM_RETRY_AFTER,
            )
        self.streams[caller.key] = held + 1
        return True

    def close_stream(self, caller: _Caller) -> None:
        held = self.streams.get(caller.key, 0) - 1
        if held > 0:
            self.streams[caller.key] = held
        else:
            self.streams.pop(caller.key, None)

    def _warn(self, event: str, caller: _Caller, method: str, extra: dict[str, Any]) -> None:
        self._unlogged[event] = self._unlogged.get(event, 0) + 1
        now = self.clock()
        if now - self._logged_at.get(event, -float("inf")) < self.log_interval:
            return
        log.warning(
            "caller over its limit: calls refused",
            extra={
                "fields": {
                    "event": event,
                    "method": method,
                    "caller": caller.key,  # a key's id or a peer address: never a secret
                    "role": caller.role,
                    "refused": self._unlogged[event],
                    **extra,
                }
            },
        )
        self._logged_at[event] = now
        self._unlogged[event] = 0


class _Limited:
    __slots__ = ("caller", "context", "holds_stream", "limiter", "method", "streaming")

    def __init__(
        self,
        limiter: RateLimiter,
        method: str,
        context: grpc.aio.ServicerContext[Any, Any],
        streaming: bool,
    ) -> None:
        self.limiter = limiter
        self.method = method
        self.context = context
        self.streaming = streaming
        self.caller: _Caller | None = None
        self.holds_stream = False

    async def __aenter__(self) -> None:
        if current_principal() is None and not self.limiter.policy.limits_anonymous:
            return  # auth off and no anonymous limit (the default): nothing to count
        caller = self.caller = caller_of(self.context)
        self.limiter.admit(caller, self.method)
        if self.streaming:
            self.holds_stream = self.limiter.open_stream(caller, self.method)

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self.holds_stream and self.caller is not None:
            self.limiter.close_stream(self.caller)
        return False


class FailedAuthGate(WrappingInterceptor):
    """Refuses calls from a host that failed authentication too often (see the module
    docstring); shares the RateLimiter's table, policy and clock."""

    def __init__(self, limiter: RateLimiter, authenticator: CredentialAuthenticator) -> None:
        super().__init__()
        self.limiter = limiter
        self.authenticator = authenticator
        self.refused = 0

    def wrap(self, method: str, handler: Handler) -> Handler:
        if is_public(method):
            return handler
        return wrap_handler(handler, method, lambda m, c: _Gated(self, m, c))

    def _known_good(self, context: grpc.aio.ServicerContext[Any, Any]) -> bool:
        return self.authenticator.verified_recently(context)


class _Gated:
    __slots__ = ("context", "gate", "key", "method")

    def __init__(
        self, gate: FailedAuthGate, method: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        self.gate = gate
        self.method = method
        self.context = context
        self.key = ("", "")

    async def __aenter__(self) -> None:
        limiter = self.gate.limiter
        limit = limiter.policy.role_rates.get(UNAUTHENTICATED)
        if limit is None:
            return
        self.key = (f"peer {peer_host(self.context.peer())}", UNAUTHENTICATED)
        wait = limiter.buckets.wait(self.key, limit, limiter.clock())
        if wait > 0 and not self.gate._known_good(self.context):
            self.gate.refused += 1
            wait = max(wait, _MIN_RETRY_AFTER)
            limiter._warn(
                "rpc.auth_failures_limited",
                _Caller(self.key[0], UNAUTHENTICATED, None),
                self.method,
                {"limit": str(limit)},
            )
            raise RateLimited(
                f"too many failed authentications from this address; retry in {wait:.3g} s",
                retry_after=wait,
            )

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        limiter = self.gate.limiter
        limit = limiter.policy.role_rates.get(UNAUTHENTICATED)
        if isinstance(exc, Unauthenticated) and limit is not None:
            limiter.buckets.take(self.key, limit, limiter.clock())
        return False
