"""An event loop on a thread of its own, and calls posted to a loop from other threads.

The executor keeps its Connect stream on such a thread so that handler code, which runs on the
caller's loop, can never stall heartbeats (see executor/runner.py). The two loops talk only
through `Inbox.post` (a call run on the other loop) and `LoopThread.run` (a coroutine run on the
thread's loop, awaited from the caller's).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("jobsched.executor")

T = TypeVar("T")


class Inbox:
    """Calls posted from any thread, run in order on one event loop.

    Every call that has arrived runs in one wake-up of the loop: a burst of posts costs one
    call_soon_threadsafe (a write to the loop's self-pipe and a wake-up) rather than one each.
    A call that raises is logged and the others still run.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._calls: collections.deque[tuple[Callable[..., object], tuple[object, ...]]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Run fn(*args) on the loop soon; dropped if the loop is closed."""
        with self._lock:
            self._calls.append((fn, args))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._run)
        except RuntimeError:  # the loop is closed: nothing there would run it
            with self._lock:
                self._calls.clear()
                self._scheduled = False

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._calls:
                    self._scheduled = False
                    return
                calls = list(self._calls)
                self._calls.clear()
            for fn, args in calls:
                try:
                    fn(*args)
                except Exception:
                    log.exception(
                        "executor internal call failed",
                        extra={"fields": {"event": "executor.internal_error"}},
                    )


class LoopThread:
    """A daemon thread running its own event loop for one coroutine (start/stop service).

    `start(main)` returns once the loop runs `main()`; the thread ends when `main` returns (it
    should return when asked to, e.g. through `run`), and `join()` waits for that without
    blocking the caller's loop.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inbox: Inbox | None = None
        self._thread: threading.Thread | None = None
        self._ended: asyncio.Future[None] | None = None

    async def start(self, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
        caller = asyncio.get_running_loop()
        ready: asyncio.Future[None] = caller.create_future()
        self._ended = caller.create_future()

        def tell(future: asyncio.Future[None]) -> None:
            def resolve() -> None:
                if not future.done():
                    future.set_result(None)

            # A closed caller's loop has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                caller.call_soon_threadsafe(resolve)

        async def run() -> None:
            self.loop = asyncio.get_running_loop()
            self.inbox = Inbox(self.loop)
            tell(ready)
            await main()

        def target() -> None:
            try:
                asyncio.run(run())
            except BaseException:
                log.exception(
                    "executor thread failed",
                    extra={"fields": {"event": "executor.thread_failed", "thread": self.name}},
                )
            finally:
                assert self._ended is not None
                tell(ready)  # if it failed before it was ready
                tell(self._ended)

        self._thread = threading.Thread(target=target, name=self.name, daemon=True)
        self._thread.start()
        await ready

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def post(self, fn: Callable[..., object], *args: object) -> None:
        """Run fn(*args) on the thread's loop soon (from any thread)."""
        if self.inbox is not None:
            self.inbox.post(fn, *args)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T | None:
        """Run `coro` on the thread's loop and wait for it from the caller's loop; None if the
        thread has ended before it finished (`coro` is closed if it never ran)."""
        if self.loop is None or not self.alive:
            coro.close()
            return None
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # closed meanwhile
            coro.close()
            return None
        result: asyncio.Future[T] = asyncio.wrap_future(future)
        assert self._ended is not None
        # Should the thread end first, the coroutine never finishes: do not wait for it.
        either: list[asyncio.Future[Any]] = [result, self._ended]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if not result.done():
            result.cancel()
            return None
        return result.result()

    async def join(self) -> None:
        """Wait until the thread has ended."""
        if self._ended is not None:
            await asyncio.shield(self._ended)
        if self._thread is not None:
            self._thread.join()  # at once: its last act was to tell us it ended
