"""Shared reads (single flight): callers asking for the same read at about the same time get one
store read's result between them.

A caller never gets a read that started before it asked: a watcher asks because something
changed, and a read already under way may have missed that change. So a caller that arrives
while a read of its key runs waits for the next one, which starts when the running one ends and
serves everyone who arrived meanwhile. However many watchers a job has, its reads are at most
one at a time plus one waiting, instead of one per watcher (a thousand subscribers of one job
were a thousand reads; now they are a handful).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class _Flights(Generic[V]):
    task: asyncio.Task[None] | None = None
    # The read that has not started yet: everyone who asks joins it.
    waiting: asyncio.Future[V] | None = None


class SharedReads(Generic[K, V]):
    def __init__(self, read: Callable[[K], Awaitable[V]]) -> None:
        self._read = read
        self._keys: dict[K, _Flights[V]] = {}
        self.reads = 0  # store reads made (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self._keys)

    async def get(self, key: K) -> V:
        flights = self._keys.get(key)
        if flights is None:
            flights = self._keys[key] = _Flights()
        if flights.waiting is None:
            flights.waiting = asyncio.get_running_loop().create_future()
            # Retrieved here, so that a read nobody waits for any more logs nothing.
            flights.waiting.add_done_callback(_retrieve)
        waiting = flights.waiting
        if flights.task is None:
            flights.task = asyncio.create_task(self._run(key, flights), name="shared-read")
        # A caller that gives up (its stream ended) does not cancel the read for the others.
        return await asyncio.shield(waiting)

    async def _run(self, key: K, flights: _Flights[V]) -> None:
        try:
            while flights.waiting is not None:
                future, flights.waiting = flights.waiting, None
                self.reads += 1
                try:
                    future.set_result(await self._read(key))
                except asyncio.CancelledError:
                    future.cancel()
                    raise
                except Exception as exc:  # every caller of this read gets the error
                    future.set_exception(exc)
        finally:
            if flights.waiting is not None:
                flights.waiting.cancel()
            if self._keys.get(key) is flights:
                del self._keys[key]


def _retrieve(future: asyncio.Future[Any]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        future.exception()
