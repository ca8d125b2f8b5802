"""Which executor failed to acknowledge which job: a job reverted for not being acknowledged by
executor X is not claimed for X again while another session that could run it has credits (X
gets it back only when nobody else can take it).

Bounded memory: at most `per_executor` jobs per executor name (the oldest go first) and `total`
in all, each remembered for `ttl`. Kept by name, so a reconnect of X remembers too."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from scheduler.dispatch.sessions import ExecutorSession


@dataclass(frozen=True, slots=True)
class _Revert:
    job_type: str
    queue: str
    until: float  # time.monotonic() when it is forgotten


def _serves(session: ExecutorSession, job_type: str, queue: str) -> bool:
    return job_type in session.job_types and (not session.queues or queue in session.queues)


class RecentReverts:
    def __init__(self, ttl: float = 300.0, per_executor: int = 1000, total: int = 10_000) -> None:
        self.ttl = ttl
        self.per_executor = per_executor
        self.total = total
        self._by_executor: dict[str, OrderedDict[str, _Revert]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def note(self, executor: str, job_id: str, job_type: str, queue: str) -> None:
        """`executor` did not acknowledge `job_id` in time (the job is QUEUED again)."""
        if self._count >= self.total:
            self._expire(time.monotonic(), force=True)
        jobs = self._by_executor.setdefault(executor, OrderedDict())
        if job_id in jobs:
            del jobs[job_id]
            self._count -= 1
        jobs[job_id] = _Revert(job_type, queue, time.monotonic() + self.ttl)
        self._count += 1
        while len(jobs) > self.per_executor:
            jobs.popitem(last=False)
            self._count -= 1

    def avoid_for(self, session: ExecutorSession, others: Iterable[ExecutorSession]) -> list[str]:
        """The jobs not to claim for `session` in this round: those it failed to acknowledge
        that another session with credits could run. Nothing (and no cost) for an executor
        that acknowledges its work."""
        jobs = self._by_executor.get(session.name)
        if not jobs:
            return []
        self._expire(time.monotonic())
        jobs = self._by_executor.get(session.name)
        if not jobs:
            return []
        able = [s for s in others if s is not session and s.credits > 0]
        takers: dict[tuple[str, str], bool] = {}  # (type, queue) -> another can run it
        avoid = []
        for job_id, revert in jobs.items():
            key = (revert.job_type, revert.queue)
            if key not in takers:
                takers[key] = any(_serves(s, *key) for s in able)
            if takers[key]:
                avoid.append(job_id)
        return avoid

    def forget(self, job_id: str, executor: str | None = None) -> None:
        """The job ran (or ended): `executor`'s record of it, or every one, can go."""
        names = [executor] if executor is not None else list(self._by_executor)
        for name in names:
            jobs = self._by_executor.get(name)
            if jobs is not None and jobs.pop(job_id, None) is not None:
                self._count -= 1
                if not jobs:
                    del self._by_executor[name]

    def _expire(self, now: float, force: bool = False) -> None:
        """Drop what outlived its ttl (and, when full, the oldest of every executor)."""
        for name, jobs in list(self._by_executor.items()):
            while jobs and (next(iter(jobs.values())).until <= now or force):
                jobs.popitem(last=False)
                self._count -= 1
                force = force and self._count >= self.total
            if not jobs:
                del self._by_executor[name]
