"""Gauges read when /metrics is scraped, from what the replica already holds in memory (no
query per scrape):

    jobsched_leader                      1 on the leader, 0 on a follower
    jobsched_leader_epoch                the fencing epoch (on the leader only)
    jobsched_executors_connected         executor streams connected to this replica
    jobsched_executor_slots{state}       their slots: used (attempts held), free (credits)
    jobsched_watch_subscribers           open WatchJob and WatchJobs streams
    jobsched_db_pool_connections{state}  the store's pool: in_use, idle
    jobsched_queue_jobs{queue,state}     active jobs per queue and state, sampled on the leader
                                         (queue_depth.py); absent on followers
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.pool import Pool, QueuePool

from scheduler.dispatch.sessions import ExecutorSession
from scheduler.leader import LeaderElector
from scheduler.telemetry.labels import BoundedValues
from scheduler.telemetry.queue_depth import QueueDepthSampler
from scheduler.watch import JobWatchHub

ACTIVE_STATES = ("waiting", "scheduled", "queued", "running")


class SchedulerGauges(Collector):
    def __init__(
        self,
        *,
        leader: LeaderElector,
        sessions: Callable[[], Iterable[ExecutorSession]],
        hub: JobWatchHub,
        pool: Pool,
        queue_depth: QueueDepthSampler,
        queue_label: BoundedValues,
    ) -> None:
        self.leader = leader
        self.sessions = sessions
        self.hub = hub
        self.pool = pool
        self.queue_depth = queue_depth
        self.queue_label = queue_label
        # Queues reported once keep reporting (0 when drained) rather than vanishing.
        self._queues: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        leading = self.leader.is_leader
        yield GaugeMetricFamily(
            "jobsched_leader", "1 on the replica that leads, 0 on a follower.", value=leading
        )
        epoch = GaugeMetricFamily(
            "jobsched_leader_epoch", "The leader's fencing epoch (reported by the leader)."
        )
        if leading and self.leader.epoch is not None:
            epoch.add_metric([], self.leader.epoch)
        yield epoch
        sessions = list(self.sessions())
        yield GaugeMetricFamily(
            "jobsched_executors_connected",
            "Executor streams connected to this replica.",
            value=len(sessions),
        )
        free = sum(s.credits for s in sessions)
        used = sum(s.capacity for s in sessions) - free
        slots = GaugeMetricFamily(
            "jobsched_executor_slots",
            "Slots of the executors connected here: used (attempts held) or free.",
            labels=["state"],
        )
        slots.add_metric(["used"], used)
        slots.add_metric(["free"], free)
        yield slots
        yield GaugeMetricFamily(
            "jobsched_watch_subscribers",
            "Open WatchJob and WatchJobs streams on this replica.",
            value=self.hub.subscriber_count(),
        )
        pool = GaugeMetricFamily(
            "jobsched_db_pool_connections",
            "Connections of the store's pool: in_use (checked out) or idle.",
            labels=["state"],
        )
        if isinstance(self.pool, QueuePool):
            pool.add_metric(["in_use"], self.pool.checkedout())
            pool.add_metric(["idle"], self.pool.checkedin())
        yield pool
        yield self._queue_jobs()

    def _queue_jobs(self) -> Metric:
        family = GaugeMetricFamily(
            "jobsched_queue_jobs",
            "Active jobs per queue and state, sampled by the leader (absent on followers).",
            labels=["queue", "state"],
        )
        depth = self.queue_depth.depth
        if not self.leader.is_leader:
            self._queues.clear()  # a new leader starts from what it sees
            return family
        counts: dict[tuple[str, str], int] = {}
        for (queue, state), jobs in depth.items():
            key = (self.queue_label(queue), state)
            counts[key] = counts.get(key, 0) + jobs
        self._queues.update(queue for queue, _ in counts)
        for queue in sorted(self._queues):
            for state in ACTIVE_STATES:
                family.add_metric([queue, state], counts.get((queue, state), 0))
        return family
