"""The performance contract of issue 6 ("Targets on this 2-core machine, PostgreSQL local,
synchronous_commit on, full history kept"), one constant per bound, in the figures' units."""

from __future__ import annotations

from bench.stats import at_least, at_most

# End-to-end no-op throughput with one scheduler and one executor.
THROUGHPUT_JOBS_PER_S = at_least(10_000)
# SubmitJobs (batches of 1,000).
SUBMIT_BATCH_JOBS_PER_S = at_least(30_000)
# Enqueue-to-start latency.
START_P50_MS = at_most(2)
START_P99_MS = at_most(10)
# Progress: executor report to WatchJob subscriber.
PROGRESS_P99_ONE_SUBSCRIBER_MS = at_most(5)
PROGRESS_P99_1000_SUBSCRIBERS_MS = at_most(50)
# Progress reported to one replica, to a subscriber on another (issue 19).
PROGRESS_P99_CROSS_REPLICA_MS = at_most(20)
# Read path at 1M jobs ("flat with depth": the deep page's p95 bound is the same).
STATUS_P99_MS = at_most(2)
LIST_PAGE_P95_MS = at_most(10)
# The dashboard's jobs page API at 1M jobs, first and deep pages (issue 18).
DASHBOARD_JOBS_P95_MS = at_most(20)
# Progress report to a browser's event stream through the dashboard (issue 18).
DASHBOARD_SSE_P99_MS = at_most(100)
# Database cost.
COMMITS_PER_JOB = at_most(0.05)
IDLE_STATEMENTS_PER_S = at_most(2)
# Scheduler memory with 1,000 executors and 1,000 watchers connected.
SCHEDULER_RSS_MB = at_most(200)
