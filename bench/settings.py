"""How big each measurement is: the full run (`make bench`, under 10 minutes) and the quick smoke
run (`make bench-quick`, about one minute)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes; every measurement is repeated `repetitions` times (medians reported)."""

    mode: str
    repetitions: int
    # 1. End-to-end throughput: jobs submitted (in batches of submit_batch) and then run.
    throughput_jobs: int
    throughput_cap_seconds: float  # a run ends when all jobs are done or after this long
    executor_capacity: int
    # 2. Submit throughput.
    batch_jobs: int  # jobs submitted through SubmitJobs...
    batch_size: int  # ...in batches of this many
    single_jobs: int  # jobs submitted one SubmitJob call at a time...
    single_callers: int  # ...by this many concurrent callers
    # 3. Enqueue-to-start latency at a steady rate.
    start_rate: float  # jobs/s
    start_seconds: float
    # 4. Progress latency.
    progress_seconds: float  # measured window per run
    progress_report_interval: float  # the handler reports this often
    many_subscribers: int
    # 5. Read path at scale.
    scale_jobs: int
    deep_page: int
    list_page_size: int
    status_calls: int  # sequential GetJobStatus calls per repetition
    list_calls: int  # timed calls per page and repetition
    sql_calls: int  # timed keyset and OFFSET statements per page and repetition
    # 6. Statements: an idle replica, then jobs submitted and run through the counting proxy.
    idle_seconds: float
    statement_jobs: int
    held_seconds: float  # the window while `held_jobs` long jobs run (a lease lasts 30 s)
    held_jobs: int
    # 7. Memory.
    memory_executors: int
    memory_settle_seconds: float  # after connecting them, before RSS and CPU are read


FULL = Sizes(
    mode="full",
    repetitions=3,
    throughput_jobs=20_000,
    throughput_cap_seconds=5.0,
    executor_capacity=100,
    batch_jobs=20_000,
    batch_size=1_000,
    single_jobs=2_000,
    single_callers=50,
    start_rate=200.0,
    start_seconds=10.0,
    progress_seconds=6.0,
    progress_report_interval=0.05,
    many_subscribers=1_000,
    scale_jobs=1_000_000,
    deep_page=1_000,
    list_page_size=100,
    status_calls=600,
    list_calls=30,
    sql_calls=3,
    idle_seconds=20.0,
    statement_jobs=1_000,
    held_seconds=25.0,
    held_jobs=100,
    memory_executors=1_000,
    memory_settle_seconds=5.0,
)

QUICK = Sizes(
    mode="quick",
    repetitions=1,
    throughput_jobs=2_000,
    throughput_cap_seconds=3.0,
    executor_capacity=100,
    batch_jobs=5_000,
    batch_size=1_000,
    single_jobs=1_000,
    single_callers=50,
    start_rate=200.0,
    start_seconds=3.0,
    progress_seconds=2.0,
    progress_report_interval=0.05,
    many_subscribers=100,
    scale_jobs=100_000,
    deep_page=100,
    list_page_size=100,
    status_calls=300,
    list_calls=10,
    sql_calls=3,
    idle_seconds=5.0,
    statement_jobs=200,
    held_seconds=5.0,
    held_jobs=100,
    memory_executors=100,
    memory_settle_seconds=2.0,
)
