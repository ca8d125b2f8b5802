"""What the leader's queue sample makes of the facts it read (scheduler/telemetry/queue_depth.py):
state counts per queue over every tenant, the oldest due QUEUED job per queue, and each group's
waiting reason from its own tenant's queue settings and running count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from scheduler.domain.queues import QueueSettings
from scheduler.domain.waiting import ExecutorView
from scheduler.store.database import Database
from scheduler.store.queue_depth import ActiveJobs, QueueDepthFacts
from scheduler.telemetry.queue_depth import QueueDepthSampler

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def sample(facts: QueueDepthFacts) -> QueueDepthSampler:
    sampler = QueueDepthSampler(cast(Database, cast(Any, None)), lambda: True)
    sampler._take(facts)
    return sampler


def test_counts_oldest_and_reasons_per_queue() -> None:
    older, newer = NOW - timedelta(minutes=5), NOW - timedelta(minutes=1)
    facts = QueueDepthFacts(
        groups=[
            ActiveJobs("acme", "reports", "queued", "pdf", 3, newer),
            ActiveJobs("other", "reports", "queued", "pdf", 2, older),
            ActiveJobs("acme", "reports", "running", "pdf", 2, None),
            ActiveJobs("acme", "reports", "scheduled", "pdf", 4, None),
            ActiveJobs("acme", "mail", "queued", "smtp", 1, newer),
            ActiveJobs("acme", "mail", "waiting", "smtp", 6, None),
        ],
        settings={
            # acme's reports queue is at its limit (2 running of 2); the other tenant's is not.
            ("acme", "reports"): QueueSettings(name="reports", max_concurrency=2),
            ("acme", "mail"): QueueSettings(name="mail", paused=True),
        },
        executors=[ExecutorView(job_types=("pdf",), queues=(), capacity=4, running=2)],
    )
    sampler = sample(facts)
    assert sampler.depth == {
        ("reports", "queued"): 5,
        ("reports", "running"): 2,
        ("reports", "scheduled"): 4,
        ("mail", "queued"): 1,
        ("mail", "waiting"): 6,
    }
    assert sampler.oldest == {"reports": older, "mail": newer}
    assert sampler.waiting == {
        ("reports", "queue_at_concurrency_limit"): 3,  # acme's
        ("reports", "scheduled"): 4,
        ("mail", "queue_paused"): 1,
        ("mail", "dependencies"): 6,
    }  # the other tenant's 2 reports jobs are being dispatched: not waiting for a reason


def test_no_executor_for_the_type_and_a_queue_without_queued_jobs() -> None:
    facts = QueueDepthFacts(
        groups=[
            ActiveJobs("acme", "media", "queued", "video", 2, NOW),
            ActiveJobs("acme", "idle", "running", "video", 1, None),
        ],
        settings={},
        executors=[],
    )
    sampler = sample(facts)
    assert sampler.waiting == {("media", "no_executor_for_type"): 2}
    assert sampler.oldest == {"media": NOW, "idle": None}
