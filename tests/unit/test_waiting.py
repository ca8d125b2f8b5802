"""Waiting reasons (scheduler/domain/waiting.py): the first that holds, in the order a job meets
them on its way to running."""

from __future__ import annotations

import pytest

from scheduler.domain.queues import QueueSettings
from scheduler.domain.states import JobState
from scheduler.domain.waiting import ExecutorView, WaitingReason, waiting_reason


def executor(
    *, running: int = 0, capacity: int = 2, draining: bool = False, types: tuple[str, ...] = ("t",)
) -> ExecutorView:
    return ExecutorView(
        job_types=types, queues=(), capacity=capacity, running=running, draining=draining
    )


def reason(*executors: ExecutorView, **settings: object) -> WaitingReason | None:
    return waiting_reason(
        state=JobState.QUEUED,
        queue="q",
        job_type="t",
        settings=QueueSettings(name="q", **settings),  # type: ignore[arg-type]
        running_in_queue=1,
        executors=executors,
    ).reason


@pytest.mark.parametrize(
    ("executors", "expected"),
    [
        ((), WaitingReason.NO_EXECUTOR_FOR_TYPE),
        ((executor(types=("other",)),), WaitingReason.NO_EXECUTOR_FOR_TYPE),
        ((executor(draining=True),), WaitingReason.EXECUTORS_DRAINING),
        ((executor(draining=True), executor(draining=True)), WaitingReason.EXECUTORS_DRAINING),
        # A draining executor's free slots are no capacity; a full one that takes work is.
        ((executor(draining=True), executor(running=2)), WaitingReason.NO_FREE_CAPACITY),
        ((executor(draining=True), executor(running=1)), None),
        ((executor(),), None),
    ],
)
def test_executors_decide_between_no_executor_draining_full_and_dispatched(
    executors: tuple[ExecutorView, ...], expected: WaitingReason | None
) -> None:
    assert reason(*executors) is expected


def test_queue_settings_come_before_executors() -> None:
    assert reason(executor(draining=True), paused=True) is WaitingReason.QUEUE_PAUSED
    assert reason(max_concurrency=1) is WaitingReason.QUEUE_AT_CONCURRENCY_LIMIT


def test_the_draining_detail_names_type_and_queue() -> None:
    waiting = waiting_reason(
        state=JobState.QUEUED,
        queue="q",
        job_type="t",
        settings=QueueSettings(name="q"),
        running_in_queue=None,
        executors=[executor(draining=True)],
    )
    assert (
        waiting.detail == "the 1 connected executors that run t jobs of queue q are shutting down"
    )
