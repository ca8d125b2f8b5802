"""The invariant checker of the fault tests and the soak (issue 20): it reads the database and
the event history after any run, and what the run itself saw (acknowledged submits and cancels,
watchers' final states), and returns every violation with the job ids involved, so a failing
run can print their histories.

1. every submit that returned OK exists;
2. every job ends terminal or is visibly pending, none RUNNING without a live lease (once the
   run has settled);
3. a terminal state is never left, except by an explicit retry (actor "client");
4. attempts only grow, one outcome per attempt, no two attempts of a job running at once;
5. an acknowledged cancel is honoured (the job ends CANCELLED, or had already ended, or ended
   within the grace a running handler gets to stop);
6. every watcher that stayed connected saw the final state;
7. each cron fire happens once (one job per fire, and no job of the scheduler's without a fire);
8. dependents run only after their dependencies succeeded.

Histories must also be gapless (event_seq = count = max seq), which every other check relies on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text

from scheduler.store.database import Database

TERMINAL = frozenset({"succeeded", "dead", "cancelled"})
PENDING = frozenset({"waiting", "scheduled", "queued"})
# How long after an acknowledged cancel a running job may still end otherwise: the handler
# is asked to stop, and a success or failure already on its way is recorded.
CANCEL_GRACE = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: int
    what: str
    job_ids: tuple[str, ...]

    def __str__(self) -> str:
        shown = ", ".join(self.job_ids[:5]) + (" ..." if len(self.job_ids) > 5 else "")
        return f"invariant {self.invariant}: {self.what} ({len(self.job_ids)}: {shown})"


@dataclass(slots=True)
class Observed:
    """What the run saw from outside: the ids of acknowledged submits, the jobs whose CancelJob
    returned OK, and for each watched job the last state its (still connected) watcher saw."""

    acknowledged: set[str] = field(default_factory=set)
    cancelled: set[str] = field(default_factory=set)
    watched: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Event:
    seq: int
    from_state: str | None
    to_state: str
    attempt: int
    actor: str
    created_at: datetime


async def check_invariants(
    db: Database, observed: Observed | None = None, *, settled: bool = True
) -> list[Violation]:
    """All violations found (empty: the run kept every invariant). `settled`: the run has
    stopped and drained, so a RUNNING job must hold a live lease."""
    observed = observed or Observed()
    async with db.read() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id, state, lease_expires_at, cancel_requested_at, finished_at, "
                    "event_seq FROM jobs"
                )
            )
        ).all()
        jobs = {str(r[0]): (str(r[1]), r[2], r[3], r[4]) for r in rows}
        seqs = {str(r[0]): int(r[5]) for r in rows}
        now = (await conn.execute(text("SELECT now()"))).scalar_one()
        events: dict[str, list[_Event]] = defaultdict(list)
        for r in await conn.execute(
            text(
                "SELECT job_id, seq, from_state, to_state, attempt, actor, created_at "
                "FROM job_events ORDER BY job_id, seq"
            )
        ):
            events[str(r[0])].append(_Event(r[1], r[2], r[3], r[4], r[5], r[6]))
        fires = [
            (str(r[0]), str(r[1]) if r[1] is not None else None)
            for r in await conn.execute(text("SELECT schedule_id, job_id FROM schedule_fires"))
        ]
        edges = [
            (str(r[0]), str(r[1]))
            for r in await conn.execute(text("SELECT job_id, depends_on FROM job_dependencies"))
        ]
    violations: list[Violation] = []

    def report(invariant: int, what: str, ids: Iterable[str]) -> None:
        found = tuple(sorted(set(ids)))
        if found:
            violations.append(Violation(invariant, what, found))

    # Gapless histories.
    report(
        0,
        "history with a gap (event_seq, count and max seq differ)",
        (
            j
            for j, seq in seqs.items()
            if [e.seq for e in events.get(j, [])] != list(range(1, seq + 1))
        ),
    )
    # 1.
    report(1, "acknowledged submit missing", observed.acknowledged - set(jobs))
    # 2.
    report(
        2,
        "state neither terminal nor pending nor running",
        (j for j, (state, *_rest) in jobs.items() if state not in TERMINAL | PENDING | {"running"}),
    )
    if settled:
        report(
            2,
            "RUNNING without a live lease",
            (
                j
                for j, (state, lease, *_rest) in jobs.items()
                if state == "running" and (lease is None or lease < now)
            ),
        )
    # 3.
    report(
        3,
        "terminal state left other than by an explicit retry",
        (
            j
            for j, history in events.items()
            for e in history
            if e.from_state in TERMINAL and e.actor != "client"
        ),
    )
    # 4.
    backwards, several, overlapping = [], [], []
    for job_id, history in events.items():
        outcomes: dict[int, int] = defaultdict(int)
        running: int | None = None  # the attempt running now, if any
        previous = 0
        for e in history:
            if e.attempt < previous:
                backwards.append(job_id)
            previous = e.attempt
            if e.to_state == "running":
                if running is not None:
                    overlapping.append(job_id)
                running = e.attempt
            if e.from_state == "running":
                outcomes[e.attempt] += 1
                running = None
        if any(n > 1 for n in outcomes.values()):
            several.append(job_id)
    report(4, "attempt number went backwards", backwards)
    report(4, "an attempt with several outcomes", several)
    report(4, "a second attempt started before the first one's outcome", overlapping)
    # 5.
    late: list[str] = []
    for job_id in observed.cancelled:
        if job_id not in jobs:
            continue
        state, _lease, requested, finished = jobs[job_id]
        if state == "cancelled":
            continue
        if (
            state in TERMINAL
            and requested is not None
            and finished is not None
            and finished <= requested + CANCEL_GRACE
        ):
            continue  # already ending when the cancel came
        if state in TERMINAL and requested is None:
            continue  # it had ended before: CancelJob answers with the terminal job
        late.append(job_id)
    # A cancel the store recorded is acknowledged too, whoever asked.
    late.extend(
        j
        for j, (state, _lease, requested, finished) in jobs.items()
        if requested is not None
        and state in {"succeeded", "dead"}
        and finished is not None
        and finished > requested + CANCEL_GRACE
    )
    report(5, "acknowledged cancel not honoured", late)
    # 6.
    report(
        6,
        "a connected watcher did not see the final state",
        (
            j
            for j, seen in observed.watched.items()
            if j in jobs and jobs[j][0] in TERMINAL and seen != jobs[j][0]
        ),
    )
    # 7.
    fired = [job for _schedule, job in fires if job is not None]
    counts: dict[str, int] = defaultdict(int)
    for job in fired:
        counts[job] += 1
    report(7, "one job recorded for several cron fires", (j for j, n in counts.items() if n > 1))
    report(
        7,
        "a job submitted by the leader's cron without a recorded fire",
        (
            j
            for j, history in events.items()
            if history
            and history[0].seq == 1
            and history[0].actor.startswith("leader:")
            and j not in counts
        ),
    )
    # 8.
    early: list[str] = []
    succeeded_at = {
        j: next((e.created_at for e in history if e.to_state == "succeeded"), None)
        for j, history in events.items()
    }
    for dependent, dependency in edges:
        started = next(
            (e.created_at for e in events.get(dependent, []) if e.to_state == "running"), None
        )
        if started is None:
            continue
        done = succeeded_at.get(dependency)
        if done is None or done > started:
            early.append(dependent)
    report(8, "a dependent ran before its dependency succeeded", early)
    return violations


async def histories(db: Database, job_ids: Iterable[str]) -> Mapping[str, list[str]]:
    """Each job's events as lines, for a report."""
    ids = list(job_ids)
    out: dict[str, list[str]] = defaultdict(list)
    async with db.read() as conn:
        for r in await conn.execute(
            text(
                "SELECT job_id, seq, from_state, to_state, attempt, reason, actor, created_at "
                "FROM job_events WHERE job_id = ANY(CAST(:ids AS uuid[])) ORDER BY job_id, seq"
            ),
            {"ids": ids},
        ):
            out[str(r[0])].append(
                f"#{r[1]} {r[2] or '-'} -> {r[3]} attempt {r[4]} ({r[5]}, {r[6]}) at {r[7]}"
            )
    return out


async def assert_invariants(
    db: Database, observed: Observed | None = None, *, settled: bool = True
) -> None:
    """Fails with every violation and the histories of the first jobs involved."""
    violations = await check_invariants(db, observed, settled=settled)
    if not violations:
        return
    involved = [j for v in violations for j in v.job_ids[:3]]
    lines = [str(v) for v in violations]
    for job_id, history in (await histories(db, involved)).items():
        lines.append(f"job {job_id}:")
        lines.extend(f"  {h}" for h in history)
    raise AssertionError("invariants violated:\n" + "\n".join(lines))
