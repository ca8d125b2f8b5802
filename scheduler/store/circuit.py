"""The store's circuit breaker: while the database is known to be unreachable, callers are told
so at once instead of each waiting out a connect or statement timeout.

    closed ──connection-level failure──► open ──a ping answers──► closed
                                          │
                                          └─ calls fail at once (DatabaseUnavailable); a
                                             recovery ping runs every `trial_interval`

A partition (packets dropped, nothing refused) made every call wait for its own timeout, so a
replica whose health already said NOT_SERVING still took seconds per call, and clients'
deadlines expired before they were told UNAVAILABLE and failed over. The trials are pings in
the background (Database._recover), not client calls: a client call let through would wait out
a connect or statement timeout. The health probe pings past the breaker too
(scheduler/api/health.py). So calls are refused for at most about `trial_interval` after the
store comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

TRIAL_INTERVAL = 0.5


class Circuit:
    """Open/closed state of the path to the store (one event loop: no locking)."""

    def __init__(
        self, trial_interval: float = TRIAL_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.trial_interval = trial_interval
        self.clock = clock
        self.opened_at: float | None = None  # clock() when it opened; None: closed

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def open_for(self) -> float:
        """Seconds since the circuit opened (0 when closed)."""
        return 0.0 if self.opened_at is None else self.clock() - self.opened_at

    def failed(self) -> bool:
        """A connection-level failure: open. Whether it was closed until now (an open circuit
        keeps its opening time)."""
        if self.opened_at is not None:
            return False
        self.opened_at = self.clock()
        return True

    def succeeded(self) -> None:
        """The store answered: close."""
        self.opened_at = None
