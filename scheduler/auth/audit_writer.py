"""Writes audit events, group-committed (a start/stop service).

`record(event)` returns once the event is stored: an acknowledged mutating call's event is
durable, and a refusal is answered only after its event is. While one INSERT is in flight, the
events that arrive wait and go together in the next (one statement for up to `max_batch`), so
a flood of refused calls costs one pool connection and a few statements a second, not a
connection and a transaction per call (it cannot starve the submits of the pool). A lone event
waits for one statement, as a direct insert would. What waits is bounded by the admission
limits: each event belongs to a call in progress.

A failed write fails every waiting `record` with the store's error; the callers decide (the
interceptor logs the whole event, so that it is never lost without a trace). Stopping writes
what is pending first. Before start() and after stop(), `record` writes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from scheduler.domain.audit import AuditEvent
from scheduler.store.audit import AuditStore


class AuditWriter:
    def __init__(self, store: AuditStore, *, max_batch: int = 1000) -> None:
        self.store = store
        self.max_batch = max_batch
        self.written = 0
        self.statements = 0
        self._pending: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await task
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def record(self, event: AuditEvent) -> None:
        if self._task is None:
            await self._insert([event])
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Read even when the caller went away meanwhile (no "exception never retrieved").
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append((event, future))
        self._wake.set()
        # A cancelled call (the client went away) still has its event written.
        await asyncio.shield(future)

    async def _insert(self, events: Sequence[AuditEvent]) -> None:
        await self.store.insert(events)
        self.statements += 1
        self.written += len(events)

    async def _run(self) -> None:
        while not (self._stopping and not self._pending):
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    await self._insert([event for event, _ in batch])
                except Exception as exc:  # the store's error goes to every waiting caller
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    @property
    def pending(self) -> int:
        return len(self._pending)
