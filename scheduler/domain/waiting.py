"""Why a job that is not running waits. Pure: the caller gathers the facts (the job, its queue's
settings and, for a queue with a concurrency limit, its running count, the connected executors)
and this decides."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.domain.jobs import JobRecord
from scheduler.domain.queues import QueueSettings
from scheduler.domain.states import JobState


class WaitingReason(enum.StrEnum):
    """The proto's WaitingReason values, without the prefix."""

    DEPENDENCIES = "DEPENDENCIES"
    SCHEDULED = "SCHEDULED"
    QUEUE_PAUSED = "QUEUE_PAUSED"
    QUEUE_AT_CONCURRENCY_LIMIT = "QUEUE_AT_CONCURRENCY_LIMIT"
    NO_EXECUTOR_FOR_TYPE = "NO_EXECUTOR_FOR_TYPE"
    NO_FREE_CAPACITY = "NO_FREE_CAPACITY"
    EXECUTORS_DRAINING = "EXECUTORS_DRAINING"


@dataclass(frozen=True, slots=True)
class ExecutorView:
    """A connected executor, as the waiting reasons see it."""

    job_types: tuple[str, ...]
    queues: tuple[str, ...]  # empty: every queue
    capacity: int
    running: int
    draining: bool = False  # shutting down: takes no new work

    def takes(self, queue: str, job_type: str) -> bool:
        return job_type in self.job_types and (not self.queues or queue in self.queues)


@dataclass(frozen=True, slots=True)
class Waiting:
    reason: WaitingReason | None  # None: not waiting (running, terminal, or being dispatched)
    detail: str = ""


def waiting_reason(
    *,
    state: JobState,
    queue: str,
    job_type: str,
    settings: QueueSettings,
    running_in_queue: int | None,
    executors: Sequence[ExecutorView],
    pending_dependencies: int = 0,
    run_at_text: str = "",
) -> Waiting:
    """The first reason that holds, in the order a job meets them on its way to running.

    `running_in_queue` is only needed when the queue has a max_concurrency (None: not counted);
    the caller may stop counting at max_concurrency + 1, so a count above the limit is shown as
    "more than" the limit, never as a number of running jobs that may be wrong."""
    if state is JobState.WAITING:
        return Waiting(
            WaitingReason.DEPENDENCIES, f"{pending_dependencies} dependencies not succeeded yet"
        )
    if state is JobState.SCHEDULED:
        return Waiting(WaitingReason.SCHEDULED, f"runs at {run_at_text}" if run_at_text else "")
    if state is not JobState.QUEUED:
        return Waiting(None)
    if settings.paused:
        return Waiting(WaitingReason.QUEUE_PAUSED, f"queue {queue} is paused")
    limit = settings.max_concurrency
    if limit is not None and running_in_queue is not None and running_in_queue >= limit:
        running = str(limit) if running_in_queue == limit else f"more than {limit}"
        return Waiting(
            WaitingReason.QUEUE_AT_CONCURRENCY_LIMIT,
            f"{running} of at most {limit} jobs of queue {queue} are running",
        )
    able = [e for e in executors if e.takes(queue, job_type)]
    if not able:
        return Waiting(
            WaitingReason.NO_EXECUTOR_FOR_TYPE,
            f"no connected executor runs {job_type} jobs of queue {queue}",
        )
    taking = [e for e in able if not e.draining]
    if not taking:
        return Waiting(
            WaitingReason.EXECUTORS_DRAINING,
            f"the {len(able)} connected executors that run {job_type} jobs of queue {queue} "
            "are shutting down",
        )
    if all(e.running >= e.capacity for e in taking):
        return Waiting(
            WaitingReason.NO_FREE_CAPACITY,
            f"the {len(taking)} executors that run it have no free slot",
        )
    return Waiting(None, "being dispatched")


def reason_of(
    job: JobRecord,
    settings: QueueSettings,
    running: int | None,
    executors: Sequence[ExecutorView],
) -> Waiting:
    return waiting_reason(
        state=job.state,
        queue=job.queue,
        job_type=job.type,
        settings=settings,
        running_in_queue=running,
        executors=executors,
        pending_dependencies=job.pending_dependencies,
        run_at_text=job.run_at.isoformat(),
    )
