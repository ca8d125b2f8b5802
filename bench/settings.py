"""How big each measurement is: the full run and the quick smoke run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sizes:
    """Workload sizes; every measurement is repeated `repetitions` times (medians reported)."""

    mode: str
    repetitions: int
    batch_jobs: int  # measurement 1: jobs submitted through SubmitJobs...
    batch_size: int  # ...in batches of this many
    single_jobs: int  # measurement 2: jobs submitted one SubmitJob call at a time...
    single_callers: int  # ...by this many concurrent callers
    status_calls: int  # measurement 3: sequential GetJobStatus calls
    list_calls: int  # measurement 4: timed ListActiveJobs calls per page
    list_page_size: int
    deep_page: int  # measurement 4: the page number reached by walking tokens


FULL = Sizes(
    mode="full",
    repetitions=3,
    batch_jobs=20_000,
    batch_size=1_000,
    single_jobs=5_000,
    single_callers=50,
    status_calls=2_000,
    list_calls=200,
    list_page_size=100,
    deep_page=50,
)

QUICK = Sizes(
    mode="quick",
    repetitions=1,
    batch_jobs=5_000,
    batch_size=1_000,
    single_jobs=1_000,
    single_callers=50,
    status_calls=500,
    list_calls=50,
    list_page_size=100,
    deep_page=50,
)
