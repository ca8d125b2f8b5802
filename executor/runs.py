"""Running handlers on the handler loop (the loop the Executor was started from).

`HandlerRuns` starts the attempts the stream hands it, each as a task named ``job <id>#<n>``:
an ``async def`` handler runs on the loop itself, a plain function in a thread pool of the
executor's capacity. It enforces timeouts and the cancel grace, and turns whatever the handler
did into a JobResult for `report` (called on the handler loop; the executor posts it on to the
stream thread). Nothing a handler does escapes its attempt: an exception of any kind, a value
that cannot be encoded or is over the scheduler's limit, a plain function returning a coroutine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
import threading
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from executor.handlers import (
    AsyncHandler,
    Handler,
    HandlerError,
    HandlerResult,
    JobCancelledError,
    JobContext,
    NonRetryableError,
    PlainHandler,
    RetryableError,
    encode_result,
    is_async_handler,
)
from executor.tracing import attempt_context, end_attempt_span
from jobsched.v1 import executor_service_pb2 as pb

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("jobsched.executor")

AttemptKey = tuple[str, int]

DEFAULT_MAX_RESULT_BYTES = 1024 * 1024  # when Registered.max_result_bytes is 0


@dataclass(eq=False)
class Attempt:
    """One assigned attempt, shared by the stream thread and the handler loop; each field is
    written by one side only."""

    key: AttemptKey
    ctx: JobContext
    handler: Handler
    timeout: float | None = None
    # Written by the stream thread: a CancelAssignment arrived.
    cancel_requested: bool = False
    # Written by the stream thread: progress pacing (stream loop time).
    progress_sent_at: float = float("-inf")
    progress_handle: asyncio.TimerHandle | None = None
    # Written on the handler loop.
    task: asyncio.Task[HandlerResult] | None = None
    timed_out: bool = False
    kill_handle: asyncio.TimerHandle | None = None
    timeout_handle: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return f"job {self.key[0]}#{self.key[1]}"


def _exit_failure(exc: SystemExit) -> RuntimeError:
    # A handler calling sys.exit() fails its attempt: raised out of a task, SystemExit would
    # stop the whole event loop.
    return RuntimeError(f"handler raised SystemExit({exc.code!r})")


class HandlerRuns:
    """The running handlers (handler loop only, but `job_of` may be called from any thread)."""

    def __init__(
        self,
        *,
        name: str,
        capacity: int,
        cancel_grace: float,
        report: Callable[[list[tuple[Attempt, pb.JobResult]]], None],
        max_result_bytes: Callable[[], int],
        tracer: Tracer | None = None,
    ) -> None:
        self.name = name
        self.tracer = tracer  # None: no spans (executor/tracing.py)
        self.capacity = capacity
        self.cancel_grace = cancel_grace
        self._report = report
        self._max_result_bytes = max_result_bytes
        self.stopping = False  # set by Executor.stop: attempts still arriving are handed back
        self._active: dict[AttemptKey, Attempt] = {}
        self._by_task: dict[asyncio.Task[Any], AttemptKey] = {}
        self._outcomes: list[tuple[Attempt, pb.JobResult]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._async: dict[Handler, bool] = {}  # is_async_handler, asked once per handler
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._threads_lock = threading.Lock()
        self._in_threads: set[AttemptKey] = set()  # plain handlers whose call has not returned

    # Starting.

    def start(self, attempts: list[Attempt]) -> None:
        """Start each attempt's handler; one that cannot start fails at once."""
        for attempt in attempts:
            try:
                self._start(attempt)
            except Exception as exc:  # a broken handler object, a bug here: this attempt only
                log.exception(
                    "handler failed to start",
                    extra={"fields": {"event": "executor.start_failed", "job_id": attempt.key[0]}},
                )
                self._active.pop(attempt.key, None)
                self._outcome(attempt, _failure(exc, retryable=True))

    def _start(self, attempt: Attempt) -> None:
        if self.stopping:
            # Arrived while the executor stops: handed back unstarted.
            self._outcome(attempt, pb.JobResult(released=True))
            return
        loop = asyncio.get_running_loop()
        handler = attempt.handler
        runner: Coroutine[Any, Any, HandlerResult]
        if self._is_async(handler):
            runner = self._run_async(cast(AsyncHandler, handler), attempt)
        else:
            runner = self._run_plain(cast(PlainHandler, handler), attempt)
        # The handler's context: its log fields and, with tracing, its attempt span.
        run_context = attempt_context(attempt.ctx, self.tracer, self.name)
        task = loop.create_task(runner, name=attempt.name, context=run_context)
        attempt.task = task
        self._active[attempt.key] = attempt
        self._by_task[task] = attempt.key
        self._idle.clear()
        task.add_done_callback(lambda done: self._done(attempt, done))

    async def _run_async(self, handler: AsyncHandler, attempt: Attempt) -> HandlerResult:
        self._arm_timeout(attempt)
        try:
            awaitable = handler(attempt.ctx)
            if not inspect.isawaitable(awaitable):
                raise NonRetryableError(
                    f"handler returned {type(awaitable).__name__} instead of an awaitable"
                )
            return await awaitable
        except SystemExit as exc:
            raise _exit_failure(exc) from exc

    def _arm_timeout(self, attempt: Attempt) -> None:
        # From the handler's first step: the timeout is the handler's own time.
        if attempt.timeout is not None:
            attempt.timeout_handle = asyncio.get_running_loop().call_later(
                attempt.timeout, self._expire, attempt
            )

    def _is_async(self, handler: Handler) -> bool:
        try:
            known = self._async.get(handler)
        except TypeError:  # an unhashable callable object: asked each time
            return is_async_handler(handler)
        if known is None:
            known = self._async[handler] = is_async_handler(handler)
        return known

    async def _run_plain(self, handler: PlainHandler, attempt: Attempt) -> HandlerResult:
        self._arm_timeout(attempt)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.capacity, thread_name_prefix=f"executor {self.name} handler"
            )

        def call() -> HandlerResult:
            with self._threads_lock:
                self._in_threads.add(attempt.key)
            try:
                return handler(attempt.ctx)
            except SystemExit as exc:
                raise _exit_failure(exc) from exc
            finally:
                with self._threads_lock:
                    self._in_threads.discard(attempt.key)

        # The thread runs in a copy of the task's context: the attempt's span is current there.
        in_context = contextvars.copy_context()
        value = await asyncio.get_running_loop().run_in_executor(self._pool, in_context.run, call)
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()  # never to be awaited: say so here, not as a RuntimeWarning
            raise NonRetryableError(
                f"handler is a plain function that returned {type(value).__name__}; "
                "declare it async def to have it awaited"
            )
        return value

    def job_of(self, task: asyncio.Task[Any]) -> AttemptKey | None:
        """The attempt whose handler runs as `task` (any thread: a dict lookup)."""
        return self._by_task.get(task)

    # Stopping.

    def request_stop(self, attempt: Attempt) -> None:
        """Set the handler's ctx.cancelled; cancel its task if it has not ended after the
        grace."""
        if self._active.get(attempt.key) is not attempt or attempt.task is None:
            return
        attempt.ctx.cancelled.set()
        if attempt.kill_handle is None and not attempt.task.done():
            attempt.kill_handle = asyncio.get_running_loop().call_later(
                self.cancel_grace, attempt.task.cancel
            )

    def _expire(self, attempt: Attempt) -> None:
        attempt.timed_out = True
        self.request_stop(attempt)

    async def drain(self, grace: float) -> None:
        """Wait up to `grace` seconds for the running handlers, cancel the rest and wait for
        them to end; every outcome has been reported when this returns."""
        if self._active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for attempt in list(self._active.values()):
            attempt.ctx.cancelled.set()
            if attempt.task is not None:
                attempt.task.cancel()
        await self._idle.wait()

    def close(self) -> None:
        """Let the thread pool go. A plain handler still running cannot be interrupted: its
        thread runs on until the function returns (its attempt was already reported)."""
        with self._threads_lock:
            stuck = sorted(self._in_threads)
        if stuck:
            log.warning(
                "plain handlers still running in threads after the executor stopped",
                extra={
                    "fields": {
                        "event": "executor.threads_left",
                        "jobs": [f"{job_id}#{attempt}" for job_id, attempt in stuck],
                    }
                },
            )
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # Outcomes.

    def _done(self, attempt: Attempt, task: asyncio.Task[HandlerResult]) -> None:
        for handle in (attempt.kill_handle, attempt.timeout_handle):
            if handle is not None:
                handle.cancel()
        self._active.pop(attempt.key, None)
        self._by_task.pop(task, None)
        try:
            result = self._result(attempt, task)
        except Exception as exc:  # a bug building the result must not lose the attempt
            log.exception(
                "building a result failed",
                extra={"fields": {"event": "executor.result_failed", "job_id": attempt.key[0]}},
            )
            result = _failure(exc, retryable=True)
        end_attempt_span(attempt.ctx, result)
        self._outcome(attempt, result)

    def _result(self, attempt: Attempt, task: asyncio.Task[HandlerResult]) -> pb.JobResult:
        if task.cancelled():
            return self._stopped_result(attempt)
        exc = task.exception()
        if exc is None:
            try:
                payload = encode_result(task.result())
            except NonRetryableError as error:
                return _failure(error, retryable=False)
            limit = self._max_result_bytes() or DEFAULT_MAX_RESULT_BYTES
            if len(payload) > limit:
                message = (
                    f"result is {len(payload)} bytes; at most {limit} are allowed "
                    "(store larger output as an artifact and return a reference)"
                )
                return pb.JobResult(failure=pb.JobFailure(message=message, retryable=False))
            return pb.JobResult(result=payload)
        if isinstance(exc, JobCancelledError):
            return self._stopped_result(attempt)
        return _failure(exc, retryable=not isinstance(exc, NonRetryableError))

    def _stopped_result(self, attempt: Attempt) -> pb.JobResult:
        if attempt.cancel_requested:
            return pb.JobResult(cancelled=True)
        if attempt.timed_out:
            message = f"timed out after {attempt.timeout:g}s"
            return pb.JobResult(failure=pb.JobFailure(message=message, retryable=True))
        if self.stopping:
            # Shutting down and the handler did not finish within the grace: handed back
            # unfinished, requeued without burning an attempt.
            return pb.JobResult(released=True)
        return pb.JobResult(cancelled=True)

    def _outcome(self, attempt: Attempt, result: pb.JobResult) -> None:
        # Outcomes of one loop iteration (a batch of tasks ends together) go out as one report:
        # one crossing to the stream thread instead of one per job.
        if not self._outcomes:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outcomes.append((attempt, result))
        self._idle.clear()  # idle once reported

    def _flush(self) -> None:
        outcomes, self._outcomes = self._outcomes, []
        try:
            self._report(outcomes)
        finally:
            if not self._active:
                self._idle.set()


# The traceback of an unexpected exception goes with its failure, its last frames first kept.
MAX_TRACEBACK_CHARS = 8000


def _failure(exc: BaseException, *, retryable: bool) -> pb.JobResult:
    if isinstance(exc, NonRetryableError | RetryableError):  # the handler's own words
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if not isinstance(exc, HandlerError):
        # A handler's deliberate failure says what it means; anything else was unexpected,
        # and where it was raised is what its author needs (shown by `jobsched status`).
        message += "\n\n" + _traceback(exc)
    return pb.JobResult(failure=pb.JobFailure(message=message, retryable=retryable))


def _traceback(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc)).rstrip()
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "... (earlier frames cut)\n" + text[-MAX_TRACEBACK_CHARS:]
    return text
