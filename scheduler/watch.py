"""Wake-ups for WatchJob and WatchJobs streams. Whoever changes a job (API, dispatcher) calls
notify(job_id); it never blocks and never awaits.

- A WatchJob stream holds one asyncio.Event. On a wake it reads what it has not seen from the
  store (events after its sequence number, the current progress), so a slow or stalled watcher
  costs no memory here, never delays the notifier, and misses no transition.
- A WatchJobs stream holds a `ChangeSubscription`: an Event plus the set of job ids changed since
  it last looked, bounded by `change_limit`. notify adds the id to every subscription (O(1)
  each); a subscription that would exceed its bound is cleared and marked `overflowed`, and the
  stream tells its client that changes were dropped. Memory per subscriber is therefore bounded
  whatever the subscriber does, and the stream reads the current rows of the ids from the store.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from scheduler.domain.jobs import Progress

# Changed job ids a WatchJobs subscription keeps before it overflows (about 1 MB).
DEFAULT_CHANGE_LIMIT = 10_000


class ChangeSubscription:
    """The jobs changed since a WatchJobs stream last looked (see the module docstring)."""

    __slots__ = ("_changed", "limit", "overflowed", "wake")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.wake = asyncio.Event()
        self.overflowed = False
        self._changed: set[str] = set()

    def add(self, job_id: str) -> None:
        # After an overflow the client re-lists, which covers every change until it looks again.
        if not self.overflowed:
            changed = self._changed
            if job_id not in changed and len(changed) >= self.limit:
                changed.clear()
                self.overflowed = True
            else:
                changed.add(job_id)
        self.wake.set()

    def take(self, max_ids: int) -> tuple[list[str], bool]:
        """Up to `max_ids` changed ids and whether changes were dropped since the last take. The
        wake stays set while ids remain."""
        changed = self._changed
        if len(changed) <= max_ids:
            ids = list(changed)
            changed.clear()
        else:
            ids = [changed.pop() for _ in range(max_ids)]
        overflowed, self.overflowed = self.overflowed, False
        if not changed:
            self.wake.clear()
        return ids, overflowed

    def __len__(self) -> int:
        return len(self._changed)


class Watch:
    """One WatchJob stream's wake-up: `changed` says the job itself changed (read the store);
    a wake without it is new live progress only (`JobWatchHub.live_progress`)."""

    __slots__ = ("changed", "wake")

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.changed = False

    def take_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed


@dataclass(frozen=True, slots=True)
class LiveProgress:
    attempt: int
    progress: Progress


class JobWatchHub:
    def __init__(self, change_limit: int = DEFAULT_CHANGE_LIMIT) -> None:
        self._watchers: defaultdict[str, set[Watch]] = defaultdict(set)
        # The latest progress reported here for jobs that have watchers here: delivered from
        # memory at once, while the store gets it at the progress writer's next tick.
        self._live: dict[str, LiveProgress] = {}
        self._subscriptions: set[ChangeSubscription] = set()
        # The bound of subscriptions made from now on (tests lower it).
        self.change_limit = change_limit
        self.closed = False
        self.forward: Callable[[str], None] | None = None
        # Progress reported here, told to the other replicas' hubs (set by the server when
        # there are any): their watchers get it as soon as the ones here.
        self.forward_progress: Callable[[str, int, Progress], None] | None = None

    def subscriber_count(self) -> int:
        """Open WatchJob streams (one watch each) and WatchJobs subscriptions."""
        return sum(len(w) for w in self._watchers.values()) + len(self._subscriptions)

    def subscribe(self, job_id: str) -> Watch:
        watch = Watch()
        self._watchers[job_id].add(watch)
        return watch

    def unsubscribe(self, job_id: str, watch: Watch) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is not None:
            watchers.discard(watch)
            if not watchers:
                del self._watchers[job_id]
                self._live.pop(job_id, None)

    def publish_progress(self, job_id: str, attempt: int, progress: Progress) -> None:
        """New progress of a running attempt, reported to this replica: its watchers here get it
        without reading the store, and the other replicas are told (`forward_progress`).
        Nothing is kept for a job nobody watches here."""
        if self.forward_progress is not None:
            self.forward_progress(job_id, attempt, progress)
        self.publish_remote_progress(job_id, attempt, progress)

    def publish_remote_progress(self, job_id: str, attempt: int, progress: Progress) -> None:
        """Progress reported to another replica: its watchers here get it (not forwarded)."""
        watchers = self._watchers.get(job_id)
        if not watchers:
            return
        self._live[job_id] = LiveProgress(attempt, progress)
        for watch in watchers:
            watch.wake.set()

    def live_progress(self, job_id: str) -> LiveProgress | None:
        return self._live.get(job_id)

    def notify(self, job_id: str) -> None:
        """A job changed on this replica: wake its watchers here, and tell the other replicas
        (`forward`, set by the server when there are any)."""
        self._wake(job_id)
        if self.forward is not None:
            self.forward(job_id)

    def progress_written(self, job_id: str) -> None:
        """The progress of a job was written here. Its watchers here had it live already
        (`publish_progress`): they are not woken to read it back (a thousand watchers of one
        job would read the store a thousand times per write). WatchJobs streams and the other
        replicas are told, as for any change."""
        for subscription in self._subscriptions:
            subscription.add(job_id)
        if self.forward is not None:
            self.forward(job_id)

    def notify_remote(self, job_ids: Iterable[str]) -> None:
        """Jobs changed on another replica: wake the watchers here (not forwarded again)."""
        for job_id in job_ids:
            self._wake(job_id)

    def _wake(self, job_id: str) -> None:
        for watch in self._watchers.get(job_id, ()):
            watch.changed = True
            watch.wake.set()
        for subscription in self._subscriptions:
            subscription.add(job_id)

    def notify_many(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self.notify(job_id)

    def subscribe_changes(self) -> ChangeSubscription:
        subscription = ChangeSubscription(self.change_limit)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe_changes(self, subscription: ChangeSubscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        """The server is stopping: wake every WatchJobs stream so that it ends at once."""
        self.closed = True
        for subscription in self._subscriptions:
            subscription.wake.set()

    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())

    def subscription_count(self) -> int:
        return len(self._subscriptions)
