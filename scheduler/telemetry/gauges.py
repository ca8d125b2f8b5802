"""Gauges read when a reader collects (a scrape of /metrics, an OTLP export), from what the
replica already holds in memory (no query per scrape):

    jobsched_ready                             1 while the replica can serve (the store answers:
                                               what /readyz and the gRPC health service say)
    jobsched_leader                            1 on the leader, 0 on a follower
    jobsched_leader_epoch                      the fencing epoch (on the leader only)
    jobsched_executors_connected               executor streams connected to this replica
    jobsched_executor_slots{state}             their slots: used (attempts held), free (credits)
    jobsched_watch_subscribers                 open WatchJob and WatchJobs streams
    jobsched_db_pool_connections{state}        the store's pool: in_use, idle, and waiting
                                               (callers waiting for a connection to be handed
                                               out or opened)
    jobsched_queue_jobs{queue,state}           active jobs per queue and state  } sampled on the
    jobsched_queue_oldest_wait_seconds{queue}  age of the oldest due QUEUED job } leader
    jobsched_jobs_waiting{queue,reason}        jobs not running, by why they    } (queue_depth.py);
                                               wait (lower-case WaitingReason)  } absent on followers

Queues reported once keep reporting (0 when drained) rather than vanishing, while this replica
leads. The OTLP reader collects on its own thread: every read here takes a snapshot first."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime

from sqlalchemy.pool import Pool, QueuePool

from jobsched.metering import Metering
from scheduler.dispatch.sessions import ExecutorSession
from scheduler.domain.waiting import WaitingReason
from scheduler.leader import LeaderElector
from scheduler.store.database import Database
from scheduler.telemetry.labels import BoundedValues
from scheduler.telemetry.queue_depth import QueueDepthSampler
from scheduler.watch import JobWatchHub

ACTIVE_STATES = ("waiting", "scheduled", "queued", "running")
REASONS = tuple(reason.value.lower() for reason in WaitingReason)
Points = Iterable[tuple[float, Mapping[str, str]]]


class SchedulerGauges:
    def __init__(
        self,
        *,
        leader: LeaderElector,
        sessions: Callable[[], Iterable[ExecutorSession]],
        hub: JobWatchHub,
        db: Database,
        queue_depth: QueueDepthSampler,
        queue_label: BoundedValues,
        ready: Callable[[], bool],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.ready = ready
        self.leader = leader
        self.sessions = sessions
        self.hub = hub
        self.db = db
        self.queue_depth = queue_depth
        self.queue_label = queue_label
        self.clock = clock
        self._queues: set[str] = set()

    def register(self, metering: Metering) -> None:
        gauge = metering.gauge
        gauge(
            "jobsched_ready",
            "1 while this replica can serve (its store answers), as /readyz says.",
            lambda: [(1 if self.ready() else 0, {})],
        )
        gauge("jobsched_leader", "1 on the replica that leads, 0 on a follower.", self._leader)
        gauge(
            "jobsched_leader_epoch",
            "The leader's fencing epoch (reported by the leader).",
            self._epoch,
        )
        gauge(
            "jobsched_executors_connected",
            "Executor streams connected to this replica.",
            lambda: [(len(list(self.sessions())), {})],
        )
        gauge(
            "jobsched_executor_slots",
            "Slots of the executors connected here: used (attempts held) or free.",
            self._slots,
        )
        gauge(
            "jobsched_watch_subscribers",
            "Open WatchJob and WatchJobs streams on this replica.",
            lambda: [(self.hub.subscriber_count(), {})],
        )
        gauge(
            "jobsched_db_pool_connections",
            "Connections of the store's pool: in_use (checked out), idle, and waiting (callers "
            "waiting for one).",
            self._pool,
        )
        gauge(
            "jobsched_queue_jobs",
            "Active jobs per queue and state, sampled by the leader (absent on followers).",
            self._queue_jobs,
        )
        gauge(
            "jobsched_queue_oldest_wait_seconds",
            "Age of each queue's oldest due QUEUED job (0: none), sampled by the leader.",
            self._oldest_wait,
        )
        gauge(
            "jobsched_jobs_waiting",
            "Jobs not running by queue and waiting reason, sampled by the leader.",
            self._waiting,
        )

    def _leader(self) -> Points:
        return [(1 if self.leader.is_leader else 0, {})]

    def _epoch(self) -> Points:
        epoch = self.leader.epoch
        return [(epoch, {})] if self.leader.is_leader and epoch is not None else []

    def _slots(self) -> Points:
        sessions = list(self.sessions())
        free = sum(s.credits for s in sessions)
        used = sum(s.capacity for s in sessions) - free
        return [(used, {"state": "used"}), (free, {"state": "free"})]

    def _pool(self) -> Points:
        pool: Pool = self.db.engine.pool
        if not isinstance(pool, QueuePool):
            return []
        return [
            (pool.checkedout(), {"state": "in_use"}),
            (pool.checkedin(), {"state": "idle"}),
            (self.db.connecting, {"state": "waiting"}),
        ]

    def _leading_queues(self, queues: Iterable[str]) -> list[str] | None:
        """The queue labels to report (bounded, sticky), or None on a follower."""
        if not self.leader.is_leader:
            self._queues.clear()  # a new leader starts from what it sees
            return None
        self._queues.update(self.queue_label(queue) for queue in queues)
        return sorted(self._queues)

    def _queue_jobs(self) -> Iterator[tuple[float, Mapping[str, str]]]:
        depth = dict(self.queue_depth.depth)
        queues = self._leading_queues(queue for queue, _ in depth)
        if queues is None:
            return
        counts: dict[tuple[str, str], int] = {}
        for (queue, state), jobs in depth.items():
            key = (self.queue_label(queue), state)
            counts[key] = counts.get(key, 0) + jobs
        for queue in queues:
            for state in ACTIVE_STATES:
                yield counts.get((queue, state), 0), {"queue": queue, "state": state}

    def _oldest_wait(self) -> Iterator[tuple[float, Mapping[str, str]]]:
        oldest = dict(self.queue_depth.oldest)
        queues = self._leading_queues(oldest)
        if queues is None:
            return
        now = self.clock()
        ages: dict[str, float] = {}
        for queue, due in oldest.items():
            label = self.queue_label(queue)
            age = 0.0 if due is None else max((now - due).total_seconds(), 0.0)
            ages[label] = max(ages.get(label, 0.0), age)
        for queue in queues:
            yield ages.get(queue, 0.0), {"queue": queue}

    def _waiting(self) -> Iterator[tuple[float, Mapping[str, str]]]:
        waiting = dict(self.queue_depth.waiting)
        queues = self._leading_queues(queue for queue, _ in waiting)
        if queues is None:
            return
        counts: dict[tuple[str, str], int] = {}
        for (queue, reason), jobs in waiting.items():
            key = (self.queue_label(queue), reason)
            counts[key] = counts.get(key, 0) + jobs
        for queue in queues:
            for reason in REASONS:
                yield counts.get((queue, reason), 0), {"queue": queue, "reason": reason}
