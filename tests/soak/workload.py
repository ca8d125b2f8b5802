"""The soak's workload generator: a seeded mix of what users do, recorded as the invariant
checker needs it (tests/faults/invariants.py `Observed`): the ids of acknowledged submits, the
jobs whose cancel was acknowledged, and what each watcher saw last.

Each step picks one action: a batch of noop jobs, a sleeping job, a failing command job that is
retried with a short backoff, a small DAG, a cancel of a recent job, or a watcher on a recent
job (WatchJob through the Python client, which resumes on UNAVAILABLE on another replica). A
call that fails is not acknowledged: whatever it may have written is not counted on."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from datetime import timedelta

from jobsched.client import JobschedClient, job_spec, make_retry_policy
from jobsched.errors import JobschedError
from jobsched.v1 import job_pb2
from tests.faults.invariants import Observed

STATE_NAMES = {
    job_pb2.JOB_STATE_SUCCEEDED: "succeeded",
    job_pb2.JOB_STATE_DEAD: "dead",
    job_pb2.JOB_STATE_CANCELLED: "cancelled",
    job_pb2.JOB_STATE_RUNNING: "running",
    job_pb2.JOB_STATE_QUEUED: "queued",
    job_pb2.JOB_STATE_SCHEDULED: "scheduled",
    job_pb2.JOB_STATE_WAITING: "waiting",
}
# The program a failing command job runs (executors allow it with --allow-command).
FAILING_ARGV = ["false"]
FAILING_GLOB = "/*/false"
ACTIONS = ("noop", "sleep", "failing", "dag", "cancel", "watch")
WEIGHTS = (30, 25, 10, 10, 15, 10)
MAX_WATCHERS = 40


class Workload:
    def __init__(self, client: JobschedClient, rng: random.Random) -> None:
        self.client = client
        self.rng = rng
        self.observed = Observed()
        self.counts: Counter[str] = Counter()  # actions done, and refused ("<action> refused")
        self._recent: list[str] = []
        self._watchers: set[asyncio.Task[None]] = set()
        self._watcher_seen: dict[str, str] = {}
        self._watch_failed: set[str] = set()

    def _acknowledge(self, ids: list[str]) -> None:
        self.observed.acknowledged.update(ids)
        self._recent.extend(ids)
        del self._recent[:-500]

    async def run(self, stop: asyncio.Event, rate: float = 25.0) -> None:
        while not stop.is_set():
            action = self.rng.choices(ACTIONS, WEIGHTS)[0]
            try:
                await asyncio.wait_for(self._do(action), timeout=10)
                self.counts[action] += 1
            except (JobschedError, TimeoutError):
                self.counts[f"{action} failed or refused"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.rng.expovariate(rate))

    async def _do(self, action: str) -> None:
        if action == "noop":
            jobs = await self.client.submit_many(
                [job_spec("noop") for _ in range(self.rng.randint(1, 10))]
            )
            self._acknowledge([j.id for j in jobs])
        elif action == "sleep":
            job = await self.client.submit(
                "sleep", payload={"seconds": round(self.rng.uniform(0.1, 2.0), 2)}
            )
            self._acknowledge([job.id])
        elif action == "failing":
            failing = await self.client.submit_job(
                job_spec(
                    "command",
                    payload={"argv": FAILING_ARGV},
                    max_attempts=self.rng.randint(1, 3),
                    retry_policy=make_retry_policy(
                        initial_backoff=timedelta(seconds=0.5), backoff_multiplier=1.5
                    ),
                )
            )
            self._acknowledge([failing.job.id])
        elif action == "dag":
            specs = [job_spec("sleep", payload={"seconds": 0.2}, ref="root")]
            specs += [job_spec("noop", ref=f"mid-{i}", depends_on_refs=["root"]) for i in range(3)]
            specs.append(job_spec("noop", depends_on_refs=[f"mid-{i}" for i in range(3)]))
            self._acknowledge([j.id for j in await self.client.submit_many(specs)])
        elif action == "cancel" and self._recent:
            job_id = self.rng.choice(self._recent)
            await self.client.cancel(job_id, reason="soak")
            self.observed.cancelled.add(job_id)
        elif action == "watch" and self._recent and len(self._watchers) < MAX_WATCHERS:
            job_id = self.rng.choice(self._recent)
            task = asyncio.create_task(self._watch(job_id))
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)

    async def _watch(self, job_id: str) -> None:
        """Follow one job to its end; a watcher whose stream failed for good did not stay
        connected, and is not held to invariant 6."""
        try:
            async for item in self.client.watch(job_id):
                kind = item.WhichOneof("item")
                if kind == "snapshot":
                    self._watcher_seen[job_id] = STATE_NAMES.get(item.snapshot.state, "?")
                elif kind == "event":
                    self._watcher_seen[job_id] = STATE_NAMES.get(item.event.to_state, "?")
        except JobschedError:
            self._watch_failed.add(job_id)  # gave up after its retries: not connected
        except asyncio.CancelledError:
            self._watch_failed.add(job_id)
            raise

    async def finish_watchers(self, within: float) -> None:
        """Let the watchers reach their jobs' ends; those still open then are cut and count as
        disconnected. Fills `observed.watched`."""
        pending = set(self._watchers)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=within)
            for task in late:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self.counts["watchers that stayed connected"] = len(
            set(self._watcher_seen) - self._watch_failed
        )
        for job_id, seen in self._watcher_seen.items():
            if job_id not in self._watch_failed:
                self.observed.watched[job_id] = seen
