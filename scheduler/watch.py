"""Wake-ups for WatchJob streams. A watcher holds one asyncio.Event per stream; whoever changes a
job (API, dispatcher) calls notify(job_id). The watcher then reads what it has not seen from the
store (events after its sequence number, the current progress), so a slow or stalled watcher
costs no memory here, never delays the notifier, and misses no transition."""

from __future__ import annotations

import asyncio
from collections import defaultdict


class JobWatchHub:
    def __init__(self) -> None:
        self._watchers: defaultdict[str, set[asyncio.Event]] = defaultdict(set)

    def subscribe(self, job_id: str) -> asyncio.Event:
        wake = asyncio.Event()
        self._watchers[job_id].add(wake)
        return wake

    def unsubscribe(self, job_id: str, wake: asyncio.Event) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(wake)
            if not watchers:
                del self._watchers[job_id]

    def notify(self, job_id: str) -> None:
        for wake in self._watchers.get(job_id, ()):
            wake.set()

    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())
