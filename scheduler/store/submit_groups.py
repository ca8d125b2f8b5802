"""Group commit for single submits: concurrent SubmitJob calls share one transaction.

A web application submits one job per request; each SubmitJob on its own is one transaction and
one commit (a WAL flush), so concurrent callers queue for the pool and for the disk. Here a
submit joins a group instead: while `writers` transactions are being written, new submits wait
in `pending`, and the next free writer takes them all (up to `max_group`, one tenant) into one
`JobStore.submit` (one multi-row insert, one commit). A submit that finds a writer free is
written at once, alone: an idle scheduler adds no delay; a busy one commits once per group, as
successes already are (scheduler/dispatch/dispatcher.py).

Each caller still gets its own answer. A group never holds two submits with the same idempotency
key (the later one waits for the next group, where it finds the job the first created). When a
group's transaction fails with a domain error that may concern only one of its submits (an
idempotency key reused with a different job, a concurrent change), nothing of it was committed,
and each submit is written again alone, so that only its own error reaches each caller. An
unavailable store fails the whole group (UNAVAILABLE: the callers retry). A caller that has gone
away before its group is taken is dropped: it was never acknowledged.

Submits with dependencies do not join groups: their dependencies are read and locked, and an
error names the request's fields; they go to `JobStore.submit` directly."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

from scheduler.domain.errors import JobschedError, Unavailable
from scheduler.domain.jobs import NewJob, Submitted
from scheduler.store.jobs import JobStore

# One group's bound: a multi-row insert of this many jobs of 1 MiB payloads at most is still a
# transaction of a few hundred milliseconds.
DEFAULT_MAX_GROUP = 256
# Transactions written at once: one being written while the next group forms is the point;
# more would only contend for the same index pages.
DEFAULT_WRITERS = 2
FIELDS = ("job",)


@dataclass(slots=True)
class _Pending:
    tenant: str
    job: NewJob
    done: asyncio.Future[Submitted]


class SubmitGroups:
    """Writes single submits in groups (module docstring). `close()` waits for the groups being
    written and fails the ones still pending with Unavailable."""

    def __init__(
        self,
        store: JobStore,
        *,
        max_group: int = DEFAULT_MAX_GROUP,
        writers: int = DEFAULT_WRITERS,
    ) -> None:
        if max_group < 1 or writers < 1:
            raise ValueError("max_group and writers must be at least 1")
        self.store = store
        self.max_group = max_group
        self.writers = writers
        self._pending: deque[_Pending] = deque()
        self._writing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.groups_written = 0  # transactions, for tests and the benchmark's notes

    @property
    def waiting(self) -> int:
        """Submits waiting for a free writer (for tests and the benchmark's notes)."""
        return len(self._pending)

    async def submit(self, tenant: str, job: NewJob) -> Submitted:
        if job.depends_on or job.depends_on_refs:
            return (await self.store.submit(tenant, [job], fields=FIELDS))[0]
        if self._closed:
            raise Unavailable("the scheduler is stopping")
        done: asyncio.Future[Submitted] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(tenant, job, done))
        self._start_writers()
        return await done

    def _start_writers(self) -> None:
        while self._pending and len(self._writing) < self.writers:
            group = self._take_group()
            if not group:
                continue
            task = asyncio.create_task(self._write(group), name="jobsched-submit-group")
            self._writing.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writing.discard(task)
        if not self._closed:
            self._start_writers()

    def _take_group(self) -> list[_Pending]:
        """The oldest pending submit's tenant: its submits in arrival order, up to max_group,
        without a second submit of one idempotency key; the rest stay pending, in order."""
        group: list[_Pending] = []
        keys: set[str] = set()
        kept: deque[_Pending] = deque()
        tenant: str | None = None
        while self._pending:
            pending = self._pending.popleft()
            if pending.done.done():  # the caller went away (cancelled): never acknowledged
                continue
            if tenant is None:
                tenant = pending.tenant
            key = pending.job.idempotency_key
            if len(group) >= self.max_group or pending.tenant != tenant or key in keys:
                kept.append(pending)
                continue
            if key is not None:
                keys.add(key)
            group.append(pending)
        self._pending = kept
        return group

    async def _write(self, group: list[_Pending]) -> None:
        try:
            submitted = await self.store.submit(
                group[0].tenant, [p.job for p in group], fields=FIELDS
            )
        except Unavailable as exc:
            for pending in group:
                _fail(pending, exc)
            return
        except JobschedError as exc:
            if len(group) == 1:
                _fail(group[0], exc)
                return
            for pending in group:  # nothing was committed: each alone, with its own answer
                await self._write_alone(pending)
            return
        except BaseException:
            for pending in group:
                _fail(pending, Unavailable("submit interrupted"))
            raise
        self.groups_written += 1
        for pending, result in zip(group, submitted, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            [result] = await self.store.submit(pending.tenant, [pending.job], fields=FIELDS)
        except JobschedError as exc:
            _fail(pending, exc)
            return
        except BaseException:
            _fail(pending, Unavailable("submit interrupted"))
            raise
        self.groups_written += 1
        if not pending.done.done():
            pending.done.set_result(result)

    async def close(self) -> None:
        self._closed = True
        while self._pending:
            _fail(self._pending.popleft(), Unavailable("the scheduler is stopping"))
        while self._writing:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._writing, return_exceptions=True)


def _fail(pending: _Pending, exc: JobschedError) -> None:
    if not pending.done.done():
        pending.done.set_exception(exc)
