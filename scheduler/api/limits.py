"""Admission control: how many calls a scheduler serves at once.

Unary calls and long-lived streams (WatchJob, WatchJobs, ExecutorService.Connect, any server or
bidi stream) are counted apart: a stream holds its slot for hours, a unary call for
milliseconds, so one bound for both would let watchers starve requests (or the reverse). A call
over its bound is refused at once with RESOURCE_EXHAUSTED, ErrorInfo reason OVERLOADED and a
RetryInfo (retry after `retry_after`), counted in `rejected_unary` / `rejected_streams`, and
reported by a warning at most every `log_interval` seconds (with the number refused since the
last one). Without it, past ~1,400 concurrent unary calls the excess failed as bare CANCELLED,
with no log line. Health checks and reflection are never refused: a load balancer must see an
overloaded replica as alive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from scheduler.api.interceptors import Handler, WrappingInterceptor, wrap_handler
from scheduler.domain.errors import Overloaded

log = logging.getLogger("jobsched.rpc")

DEFAULT_MAX_CONCURRENT_RPCS = 1000
DEFAULT_MAX_STREAMS = 10_000
EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class AdmissionLimiter(WrappingInterceptor):
    """Bounds the calls in progress (an interceptor inside the ErrorInterceptor, which turns
    the Overloaded it raises into the status)."""

    def __init__(
        self,
        max_unary: int = DEFAULT_MAX_CONCURRENT_RPCS,
        max_streams: int = DEFAULT_MAX_STREAMS,
        *,
        retry_after: float = 1.0,
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.max_unary = max_unary
        self.max_streams = max_streams
        self.retry_after = retry_after
        self.log_interval = log_interval
        self.clock = clock
        self.unary = 0  # in progress
        self.streams = 0
        self.rejected_unary = 0  # refused since start
        self.rejected_streams = 0
        self._logged_at = -float("inf")
        self._unlogged = 0

    @property
    def rejected(self) -> int:
        return self.rejected_unary + self.rejected_streams

    def wrap(self, method: str, handler: Handler) -> Handler:
        if method.startswith(EXEMPT_PREFIXES):
            return handler
        streaming = handler.unary_unary is None
        return wrap_handler(handler, method, lambda m, c: _Admission(self, m, streaming))

    def _refuse(self, method: str, streaming: bool) -> Overloaded:
        if streaming:
            self.rejected_streams += 1
            what, limit = "streams", self.max_streams
        else:
            self.rejected_unary += 1
            what, limit = "calls", self.max_unary
        self._unlogged += 1
        now = self.clock()
        if now - self._logged_at >= self.log_interval:
            log.warning(
                "overloaded: calls refused",
                extra={
                    "fields": {
                        "event": "rpc.overloaded",
                        "method": method,
                        "refused": self._unlogged,
                        "refused_total": self.rejected,
                        "unary_in_progress": self.unary,
                        "streams_in_progress": self.streams,
                        "max_unary": self.max_unary,
                        "max_streams": self.max_streams,
                    }
                },
            )
            self._logged_at = now
            self._unlogged = 0
        return Overloaded(
            f"the scheduler is serving its limit of {limit} concurrent {what}; "
            f"retry in {self.retry_after:g} s",
            retry_after=self.retry_after,
        )


class _Admission:
    def __init__(self, limiter: AdmissionLimiter, method: str, streaming: bool) -> None:
        self.limiter = limiter
        self.method = method
        self.streaming = streaming
        self.admitted = False

    async def __aenter__(self) -> None:
        limiter = self.limiter
        if self.streaming:
            if limiter.streams >= limiter.max_streams:
                raise limiter._refuse(self.method, True)
            limiter.streams += 1
        else:
            if limiter.unary >= limiter.max_unary:
                raise limiter._refuse(self.method, False)
            limiter.unary += 1
        self.admitted = True

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self.admitted:
            if self.streaming:
                self.limiter.streams -= 1
            else:
                self.limiter.unary -= 1
        return False
