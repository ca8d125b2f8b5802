"""The store's circuit breaker: while the database is known to be unreachable, callers are told
so at once instead of each waiting out a connect or statement timeout.

    closed ──connection-level failure──► open ──the store answers──► closed
                                          │
                                          └─ calls fail at once; while they come, a trial
                                             ping runs in the background at most once per
                                             `trial_interval` (never two at a time)

A partition (packets dropped, nothing refused) made every call wait for its own timeout, so a
replica whose health already said NOT_SERVING still took seconds per call, and clients'
deadlines expired before they were told UNAVAILABLE and failed over. The health probe pings
past the breaker (scheduler/api/health.py), so the circuit closes within a health interval of
the store coming back even when no client calls; the trials close it sooner. Trials are pings,
not client calls: a client call let through would wait out a connect or statement timeout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

TRIAL_INTERVAL = 1.0


class Circuit:
    """Open/closed state of the path to the store (not thread-safe: one event loop)."""

    def __init__(
        self, trial_interval: float = TRIAL_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.trial_interval = trial_interval
        self.clock = clock
        self.opened_at: float | None = None  # clock() when it opened; None: closed
        self._trial_at = -math.inf
        self._trial_in_flight = False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def open_for(self) -> float:
        """Seconds since the circuit opened (0 when closed)."""
        return 0.0 if self.opened_at is None else self.clock() - self.opened_at

    def take_trial(self) -> bool:
        """Whether a trial is due now (the caller runs one, then calls `trial_done`)."""
        now = self.clock()
        if self.opened_at is None or self._trial_in_flight:
            return False
        if now - self._trial_at < self.trial_interval:
            return False
        self._trial_at = now
        self._trial_in_flight = True
        return True

    def trial_done(self) -> None:
        self._trial_in_flight = False

    def failed(self) -> None:
        """A connection-level failure: open (an open circuit keeps its opening time)."""
        if self.opened_at is None:
            self.opened_at = self.clock()

    def succeeded(self) -> None:
        """The store answered: close."""
        self.opened_at = None
