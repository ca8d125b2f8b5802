"""Job dependencies (a DAG): validation of what a client asks for, and the initial state of a job
that depends on others. Pure: the store reads the dependencies' states and passes them in.

A job names its dependencies two ways: `depends_on`, ids of stored jobs of the same tenant, and,
within one SubmitJobs batch, `depends_on_refs`, the `ref` of other jobs of the batch. Rules:

- ids are job ids (UUIDs); refs are at most MAX_REF printable characters, unique in the batch;
- no id or ref twice in one job's lists; at most MAX_DEPENDENCIES per job and
  MAX_BATCH_DEPENDENCIES per batch;
- every ref names a job of the batch, and the refs form no cycle;
- at submit (plan_dependencies), every id names a job of the tenant that is not DEAD or
  CANCELLED: a job depending on one could never run. A SUCCEEDED dependency counts as met.

A job with unmet dependencies starts WAITING with `pending_dependencies` = their number; the
store moves it on (QUEUED, or SCHEDULED while its run_at is ahead) when the last one succeeds,
and cancels it when one ends DEAD or CANCELLED.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from scheduler.domain.echo import echo
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.jobs import NewJob
from scheduler.domain.states import JobState

MAX_REF = 200
MAX_DEPENDENCIES = 5000  # per job: depends_on and depends_on_refs together
MAX_BATCH_DEPENDENCIES = 100_000  # edges per SubmitJobs call

# A dependency in one of these states can never succeed (short of a manual RetryJob).
FAILED_STATES = frozenset({JobState.DEAD, JobState.CANCELLED})


def check_ref(ref: str, path: str, violations: list[FieldViolation]) -> None:
    if len(ref) > MAX_REF or not ref.isprintable():
        violations.append(
            FieldViolation(f"{path}.ref", f"must be at most {MAX_REF} printable characters")
        )


def check_dependency_lists(
    ids: Sequence[str], refs: Sequence[str], path: str, violations: list[FieldViolation]
) -> None:
    """Per job: sizes and repeats. `ids` are canonical job ids (validated by the caller)."""
    if len(ids) + len(refs) > MAX_DEPENDENCIES:
        violations.append(
            FieldViolation(f"{path}.depends_on", f"at most {MAX_DEPENDENCIES} dependencies per job")
        )
        return
    for name, values in (("depends_on", ids), ("depends_on_refs", refs)):
        first: dict[str, int] = {}
        for k, value in enumerate(values):
            if value in first:
                violations.append(
                    FieldViolation(
                        f"{path}.{name}[{k}]", f"repeats {name}[{first[value]}] ({echo(value)})"
                    )
                )
            first.setdefault(value, k)


def resolve_refs(
    refs: Sequence[str], depends_on_refs: Sequence[Sequence[str]], paths: Sequence[str]
) -> list[tuple[int, ...]]:
    """Turn each job's depends_on_refs into positions in the batch. Raises InvalidArgument for
    a repeated ref, an unknown ref or a cycle, naming the field (`jobs[3].depends_on_refs[0]`)."""
    violations: list[FieldViolation] = []
    position: dict[str, int] = {}
    for i, ref in enumerate(refs):
        if not ref:
            continue
        if ref in position:
            violations.append(
                FieldViolation(f"{paths[i]}.ref", f"repeats the ref of {paths[position[ref]]}")
            )
        position.setdefault(ref, i)
    resolved: list[tuple[int, ...]] = []
    for i, wanted in enumerate(depends_on_refs):
        targets: list[int] = []
        for k, ref in enumerate(wanted):
            target = position.get(ref)
            if target is None:
                violations.append(
                    FieldViolation(
                        f"{paths[i]}.depends_on_refs[{k}]",
                        f"no job of this batch has ref {echo(ref)}",
                    )
                )
                continue
            targets.append(target)
        resolved.append(tuple(targets))
    if violations:
        raise InvalidArgument(violations)
    cycle = find_cycle(resolved)
    if cycle is not None:
        # The edge that closes the cycle: from the last job of it to the first.
        last, first = cycle[-1], cycle[0]
        k = resolved[last].index(first)
        names = " -> ".join(echo(refs[i]) for i in [*cycle, first])
        raise InvalidArgument(
            [
                FieldViolation(
                    f"{paths[last]}.depends_on_refs[{k}]",
                    f"the dependencies form a cycle: {names} (each depends on the next)",
                )
            ]
        )
    return resolved


def find_cycle(edges: Sequence[Sequence[int]]) -> list[int] | None:
    """A cycle of the graph (node i depends on the nodes edges[i]) as the list of its nodes, in
    dependency order (each depends on the next, the last on the first), or None. Iterative: a
    chain of thousands of jobs must not hit the recursion limit."""
    white, grey, black = 0, 1, 2
    colour = [white] * len(edges)
    for root in range(len(edges)):
        if colour[root] != white:
            continue
        colour[root] = grey
        path = [root]
        cursors = [0]
        while path:
            node = path[-1]
            if cursors[-1] < len(edges[node]):
                child = edges[node][cursors[-1]]
                cursors[-1] += 1
                if colour[child] == grey:
                    return path[path.index(child) :]
                if colour[child] == white:
                    colour[child] = grey
                    path.append(child)
                    cursors.append(0)
            else:
                colour[node] = black
                path.pop()
                cursors.pop()
    return None


def count_edges(jobs: Sequence[NewJob]) -> int:
    return sum(len(j.depends_on) + len(j.depends_on_refs) for j in jobs)


@dataclasses.dataclass(frozen=True, slots=True)
class StoredJob:
    """What the submit needs to know of a stored job: a dependency named by id, or the job an
    idempotency key of the batch already names."""

    id: str
    state: JobState


def _still_pending(found: StoredJob, field: str, violations: list[FieldViolation]) -> bool:
    """Whether a stored dependency is yet to succeed; a failed one is a violation."""
    if found.state in FAILED_STATES:
        violations.append(
            FieldViolation(
                field,
                f"job {found.id} is {found.state.name}: a job depending on it could never run "
                "(retry it first)",
            )
        )
        return False
    return found.state is not JobState.SUCCEEDED


def plan_dependencies(
    jobs: Sequence[NewJob],
    paths: Sequence[str],
    stored: Mapping[str, StoredJob],
    existing: Mapping[int, StoredJob],
) -> list[NewJob]:
    """The jobs as they are to be inserted: WAITING with pending_dependencies = the number of
    distinct dependencies that have not succeeded, or as validated when every one has.

    `stored`: the tenant's jobs named by depends_on (missing: unknown or another tenant's).
    `existing`: batch positions whose idempotency key names a stored job; they are not inserted
    (the existing job is returned), so their own dependencies are not checked, and a ref to one
    is a dependency on that stored job. Raises InvalidArgument naming every bad field."""
    violations: list[FieldViolation] = []
    planned: list[NewJob] = []
    for i, job in enumerate(jobs):
        if i in existing or not (job.depends_on or job.depends_on_refs):
            planned.append(job)
            continue
        pending_ids: set[str] = set()  # distinct: a job may name one by id and by ref
        new_targets: set[int] = set()
        for k, dep_id in enumerate(job.depends_on):
            found = stored.get(dep_id)
            field = f"{paths[i]}.depends_on[{k}]"
            if found is None:
                violations.append(FieldViolation(field, f"no job {dep_id} in this tenant"))
            elif _still_pending(found, field, violations):
                pending_ids.add(found.id)
        for k, target in enumerate(job.depends_on_refs):
            if target not in existing:
                new_targets.add(target)
            elif _still_pending(existing[target], f"{paths[i]}.depends_on_refs[{k}]", violations):
                pending_ids.add(existing[target].id)
        pending = len(pending_ids) + len(new_targets)
        planned.append(
            dataclasses.replace(job, state=JobState.WAITING, pending_dependencies=pending)
            if pending
            else job
        )
    if violations:
        raise InvalidArgument(violations)
    return planned
