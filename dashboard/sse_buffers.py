"""The per-viewer buffers of the event streams (see sse.py): bounded whatever the viewer's
speed, and what a viewer must never miss kept."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Any

from dashboard import serialize
from jobsched.v1 import job_service_pb2

MAX_LINES = 500
MAX_JOBS = 1000

Item = tuple[str, dict[str, Any], int | None]  # (event name, data, sequence)


class JobBuffer:
    """A viewer's pending events of one job (see the module docstring)."""

    def __init__(self, max_lines: int = MAX_LINES) -> None:
        self.max_lines = max_lines
        self._items: deque[Item] = deque()
        self._lines = 0
        # The pending `dropped` event (its count grows while it waits), where lines were lost.
        self._dropped: dict[str, Any] | None = None
        self._closed = False
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, name: str, data: dict[str, Any], sequence: int | None = None) -> None:
        if name == "progress":
            # Only the latest progress is worth showing.
            for pending in [i for i in self._items if i[0] == "progress"]:
                self._items.remove(pending)
        elif name == "log":
            if self._lines >= self.max_lines:
                if self._dropped is None:
                    self._dropped = {"lines": 0}
                    self._items.append(("dropped", self._dropped, None))
                self._dropped["lines"] += 1
                self._ready.set()
                return
            self._lines += 1
        self._items.append((name, data, sequence))
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self, timeout: float) -> Item | None:  # noqa: ASYNC109
        """The next event; ("keepalive", ...) after `timeout` idle seconds; None once closed and
        drained."""
        while True:
            if self._items:
                item = self._items.popleft()
                if item[0] == "log":
                    self._lines -= 1
                elif item[1] is self._dropped:
                    self._dropped = None
                return item
            if self._closed:
                return None
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return ("keepalive", {}, None)


class JobsBuffer:
    """A viewer's pending changes of many jobs: the latest item per job."""

    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self.max_jobs = max_jobs
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._signals: deque[str] = deque()
        self._closed = False
        self._ready = asyncio.Event()

    def put_job(self, job: dict[str, Any]) -> None:
        self._jobs.pop(job["id"], None)
        self._jobs[job["id"]] = job
        if len(self._jobs) > self.max_jobs:
            self._jobs.clear()
            self.signal("changes_dropped")
        self._ready.set()

    def signal(self, name: str) -> None:
        if name == "changes_dropped":
            self._jobs.clear()
        self._signals.append(name)
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self, timeout: float) -> Item | None:  # noqa: ASYNC109
        while True:
            if self._signals:
                return (self._signals.popleft(), {}, None)
            if self._jobs:
                _, job = self._jobs.popitem(last=False)
                return ("job", job, None)
            if self._closed:
                return None
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return ("keepalive", {}, None)


def watch_item(item: job_service_pb2.WatchJobResponse) -> tuple[str, dict[str, Any]]:
    kind = item.WhichOneof("item")
    if kind == "snapshot":
        return "snapshot", serialize.job(item.snapshot)
    if kind == "event":
        return "transition", serialize.event(item.event)
    if kind == "progress":
        p = item.progress
        return "progress", {"percent": p.percent, "step": p.step, "message": p.message}
    return "log", {"attempt": item.log.attempt, "line": item.log.line_number, "text": item.log.line}
