"""Dependencies in the domain: ids, refs and cycles are validated, and a job's initial state and
pending count follow from its dependencies' states."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.domain.dependencies import (
    MAX_BATCH_DEPENDENCIES,
    MAX_DEPENDENCIES,
    MAX_REF,
    StoredJob,
    find_cycle,
    plan_dependencies,
)
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.jobs import NewJob
from scheduler.domain.states import JobState
from scheduler.domain.validation import JobSpecInput, validate_batch, validate_job

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
A, B, C = (str(uuid.UUID(int=i)) for i in (1, 2, 3))


def spec(**fields: Any) -> JobSpecInput:
    fields.setdefault("type", "work")
    return JobSpecInput(**fields)


def batch_violations(specs: list[JobSpecInput]) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as exc:
        validate_batch(specs, NOW)
    return exc.value.violations


def job_violations(job: JobSpecInput) -> list[FieldViolation]:
    with pytest.raises(InvalidArgument) as exc:
        validate_job(job, NOW)
    return exc.value.violations


# --- validation of ids and refs ---------------------------------------------------------------


def test_depends_on_ids_are_canonicalised_and_refs_become_positions():
    jobs = validate_batch(
        [
            spec(ref="extract", depends_on=(A.upper(),)),
            spec(ref="load", depends_on_refs=("extract",)),
            spec(depends_on=(B,), depends_on_refs=("load", "extract")),
        ],
        NOW,
    )
    assert jobs[0].depends_on == (A,)
    assert jobs[0].depends_on_refs == ()
    assert jobs[1].depends_on_refs == (0,)
    assert jobs[2].depends_on == (B,)
    assert jobs[2].depends_on_refs == (1, 0)
    # Validation does not know the dependencies' states: the store plans the initial state.
    assert all(j.state is JobState.QUEUED and j.pending_dependencies == 0 for j in jobs)


def test_jobs_without_dependencies_are_unchanged():
    job = validate_job(spec(), NOW)
    assert (job.depends_on, job.depends_on_refs, job.pending_dependencies) == ((), (), 0)


def test_a_bad_id_is_named_by_its_index():
    violations = job_violations(spec(depends_on=(A, "not-a-uuid", "0x" + "1" * 32)))
    assert [v.field for v in violations] == ["job.depends_on[1]", "job.depends_on[2]"]


def test_an_id_repeated_in_one_job_is_rejected_even_spelled_differently():
    violations = batch_violations([spec(), spec(depends_on=(A, B, A.upper()))])
    assert [v.field for v in violations] == ["jobs[1].depends_on[2]"]
    assert "repeats depends_on[0]" in violations[0].description


def test_a_repeated_ref_of_the_batch_is_rejected():
    violations = batch_violations([spec(ref="x"), spec(ref="y"), spec(ref="x")])
    assert [(v.field, v.description) for v in violations] == [
        ("jobs[2].ref", "repeats the ref of jobs[0]")
    ]


def test_an_unknown_ref_is_named():
    violations = batch_violations(
        [spec(ref="a"), spec(depends_on_refs=("a", "b")), spec(depends_on_refs=("zz",))]
    )
    assert [v.field for v in violations] == [
        "jobs[1].depends_on_refs[1]",
        "jobs[2].depends_on_refs[0]",
    ]
    assert "no job of this batch has ref 'b'" in violations[0].description


def test_a_ref_repeated_in_one_job_is_rejected():
    violations = batch_violations([spec(ref="a"), spec(depends_on_refs=("a", "a"))])
    assert [v.field for v in violations] == ["jobs[1].depends_on_refs[1]"]


def test_ref_length_and_printability():
    assert validate_batch([spec(ref="r" * MAX_REF)], NOW)
    for bad in ("r" * (MAX_REF + 1), "tab\there"):
        assert [v.field for v in batch_violations([spec(ref=bad)])] == ["jobs[0].ref"]


def test_too_many_dependencies_for_one_job():
    ids = tuple(str(uuid.UUID(int=i + 10)) for i in range(MAX_DEPENDENCIES + 1))
    assert [v.field for v in job_violations(spec(depends_on=ids))] == ["job.depends_on"]
    assert validate_job(spec(depends_on=ids[:-1]), NOW).depends_on == ids[:-1]


def test_too_many_dependencies_in_one_batch():
    per_job = MAX_DEPENDENCIES
    jobs = MAX_BATCH_DEPENDENCIES // per_job + 1
    ids = tuple(str(uuid.UUID(int=i + 10)) for i in range(per_job))
    violations = batch_violations([spec(depends_on=ids) for _ in range(jobs)])
    assert [v.field for v in violations] == ["jobs"]


def test_a_single_submit_has_no_batch_to_refer_to():
    violations = job_violations(spec(depends_on_refs=("other",)))
    assert [v.field for v in violations] == ["job.depends_on_refs[0]"]
    # ... except itself, which is a cycle.
    violations = job_violations(spec(ref="me", depends_on_refs=("me",)))
    assert [v.field for v in violations] == ["job.depends_on_refs[0]"]
    assert "cycle" in violations[0].description
    # A ref alone is harmless (nothing refers to it).
    assert validate_job(spec(ref="alone"), NOW).depends_on_refs == ()


# --- cycles -----------------------------------------------------------------------------------


def test_a_self_reference_is_a_cycle():
    violations = batch_violations([spec(), spec(ref="x", depends_on_refs=("x",))])
    assert [v.field for v in violations] == ["jobs[1].depends_on_refs[0]"]
    assert "'x' -> 'x'" in violations[0].description


def test_a_cycle_names_the_edge_closing_it_and_the_refs_on_it():
    violations = batch_violations(
        [
            spec(ref="a", depends_on_refs=("c",)),
            spec(ref="b", depends_on_refs=("a",)),
            spec(ref="free"),
            spec(ref="c", depends_on_refs=("free", "b")),
        ]
    )
    [violation] = violations
    assert violation.field == "jobs[1].depends_on_refs[0]"
    assert "'a' -> 'c' -> 'b' -> 'a'" in violation.description


def test_a_diamond_is_not_a_cycle():
    jobs = validate_batch(
        [
            spec(ref="top"),
            spec(ref="left", depends_on_refs=("top",)),
            spec(ref="right", depends_on_refs=("top",)),
            spec(ref="bottom", depends_on_refs=("left", "right")),
        ],
        NOW,
    )
    assert jobs[3].depends_on_refs == (1, 2)


def test_find_cycle_on_graphs():
    assert find_cycle([]) is None
    assert find_cycle([(), (0,), (0, 1)]) is None
    assert find_cycle([(0,)]) == [0]
    assert find_cycle([(1,), (2,), (0,)]) == [0, 1, 2]
    cycle = find_cycle([(), (2,), (3,), (1,)])
    assert cycle is not None
    assert sorted(cycle) == [1, 2, 3]


def test_find_cycle_handles_a_long_chain_without_recursion():
    n = 50_000
    chain = [(i + 1,) if i + 1 < n else () for i in range(n)]
    assert find_cycle(chain) is None
    chain[-1] = (0,)
    cycle = find_cycle(chain)
    assert cycle is not None
    assert len(cycle) == n


def test_find_cycle_in_a_wide_layered_dag_is_none():
    layers, width = 50, 50
    edges = [
        tuple((layer - 1) * width + j for j in range(width)) if layer else ()
        for layer in range(layers)
        for _ in range(width)
    ]
    assert find_cycle(edges) is None


# --- the initial state, from the dependencies' states ----------------------------------------


def new(**fields: Any) -> NewJob:
    base: dict[str, Any] = {
        "queue": "default",
        "type": "work",
        "payload": b"",
        "priority": 50,
        "max_attempts": None,
        "run_at": NOW,
        "state": JobState.QUEUED,
    }
    base.update(fields)
    return NewJob(**base)


def stored(*jobs: tuple[str, JobState]) -> dict[str, StoredJob]:
    return {job_id: StoredJob(job_id, state) for job_id, state in jobs}


PATHS = ["jobs[0]", "jobs[1]", "jobs[2]"]


def test_unmet_dependencies_make_a_job_wait_with_their_count():
    jobs = [
        new(depends_on=(A, B, C)),
        new(depends_on_refs=(0,)),
        new(state=JobState.SCHEDULED, run_at=NOW + timedelta(hours=1), depends_on=(A,)),
    ]
    planned = plan_dependencies(
        jobs,
        PATHS,
        stored((A, JobState.RUNNING), (B, JobState.SUCCEEDED), (C, JobState.WAITING)),
        {},
    )
    assert [(j.state, j.pending_dependencies) for j in planned] == [
        (JobState.WAITING, 2),  # B succeeded already: met
        (JobState.WAITING, 1),  # a job of the batch has not run yet
        (JobState.WAITING, 1),  # its run_at decides again when the last one succeeds
    ]


def test_only_succeeded_dependencies_leave_the_state_as_validated():
    jobs = [new(depends_on=(A,)), new(state=JobState.SCHEDULED, depends_on=(A, B))]
    planned = plan_dependencies(
        jobs, PATHS, stored((A, JobState.SUCCEEDED), (B, JobState.SUCCEEDED)), {}
    )
    assert planned == jobs


@pytest.mark.parametrize("state", [JobState.DEAD, JobState.CANCELLED])
def test_a_failed_dependency_is_rejected(state: JobState):
    with pytest.raises(InvalidArgument) as exc:
        plan_dependencies(
            [new(), new(depends_on=(B, A))], PATHS, stored((A, state), (B, JobState.QUEUED)), {}
        )
    [violation] = exc.value.violations
    assert violation.field == "jobs[1].depends_on[1]"
    assert f"is {state.name}" in violation.description


def test_unknown_ids_are_all_named():
    with pytest.raises(InvalidArgument) as exc:
        plan_dependencies(
            [new(depends_on=(A, B)), new(depends_on=(C,))],
            ["job", "x"],
            stored((B, JobState.QUEUED)),
            {},
        )
    assert [v.field for v in exc.value.violations] == ["job.depends_on[0]", "x.depends_on[0]"]
    assert "no job" in exc.value.violations[0].description


def test_a_ref_to_a_job_that_exists_by_its_idempotency_key_depends_on_that_job():
    jobs = [
        new(idempotency_key="k0"),
        new(idempotency_key="k1"),
        new(depends_on=(A,), depends_on_refs=(0, 1)),
    ]
    # jobs[0] exists already as A (RUNNING), jobs[1] as B (SUCCEEDED): A named twice counts once.
    existing = {0: StoredJob(A, JobState.RUNNING), 1: StoredJob(B, JobState.SUCCEEDED)}
    planned = plan_dependencies(jobs, PATHS, stored((A, JobState.RUNNING)), existing)
    assert (planned[2].state, planned[2].pending_dependencies) == (JobState.WAITING, 1)


def test_a_ref_to_an_existing_dead_job_is_rejected():
    jobs = [new(idempotency_key="k0"), new(depends_on_refs=(0,))]
    with pytest.raises(InvalidArgument) as exc:
        plan_dependencies(jobs, PATHS, {}, {0: StoredJob(A, JobState.DEAD)})
    assert [v.field for v in exc.value.violations] == ["jobs[1].depends_on_refs[0]"]


def test_a_job_that_exists_already_is_not_checked():
    # Submitting the same keyed DAG again returns the stored jobs, whatever their states now.
    jobs = [new(idempotency_key="k0", depends_on=(A,))]
    assert (
        plan_dependencies(
            jobs, PATHS, stored((A, JobState.DEAD)), {0: StoredJob(B, JobState.CANCELLED)}
        )
        == jobs
    )
