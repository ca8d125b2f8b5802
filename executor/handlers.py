"""The handler SDK: what a job handler sees and how it reports back.

A handler takes one `JobContext` and returns ``bytes | str | dict | None``; it is registered in a
`HandlerRegistry` under its job type. It may be

- ``async def handler(ctx)``: runs as a task on the event loop the executor was started from (so
  it may use that loop's resources). It must not block: a blocking call there stalls every other
  handler on the loop, and the executor logs a warning naming the job;
- a plain ``def handler(ctx)``: runs in the executor's thread pool (as many threads as its
  capacity), so it may block. It cannot be interrupted: it should look at ``ctx.cancelled`` (or
  call ``ctx.raise_if_cancelled()``) now and then. One that ignores it has its attempt reported
  stopped after the grace, but its thread runs on until the function returns.

It may report progress and log lines through the context, from any thread; those calls only
enqueue (the latest progress wins, logs sit in a bounded buffer) and the executor forwards them in
the background, so reporting never blocks the handler.

Whatever a handler does fails only its attempt: an exception, a value that cannot be encoded, a
result over the scheduler's size limit, a plain function returning a coroutine.

Exceptions a handler may raise::

    HandlerError                  root of the handler exceptions
    ├── RetryableError            the attempt failed; a retry may help (any other exception too)
    ├── NonRetryableError         the attempt failed; retrying cannot help, the job goes DEAD
    └── JobCancelledError         the handler stopped because ctx.cancelled was set

    UnknownJobTypeError           (a LookupError) no handler is registered for a job type
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from opentelemetry import trace

from jobsched import payloads
from jobsched.artifacts import Artifact, ArtifactSource

if TYPE_CHECKING:
    from executor.artifacts import ArtifactUploader

HandlerResult = bytes | str | dict[str, Any] | None
AsyncHandler = Callable[["JobContext"], Awaitable[HandlerResult]]
PlainHandler = Callable[["JobContext"], HandlerResult]
Handler = AsyncHandler | PlainHandler

DEFAULT_MAX_LOG_LINES = 1000
_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class HandlerError(Exception):
    """The handler failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__ or type(self).__name__)


class RetryableError(HandlerError):
    """The attempt failed; a later attempt may succeed."""


class NonRetryableError(HandlerError):
    """The attempt failed and retrying cannot help."""


class JobCancelledError(HandlerError):
    """The handler stopped because the job was cancelled."""


class UnknownJobTypeError(LookupError):
    """No handler is registered for this job type."""


def normalise_type(job_type: str) -> str:
    """Job types are case-insensitive: the registry and the scheduler both use lower case."""
    return job_type.strip().lower()


class LogLines(NamedTuple):
    """Consecutive log lines of an attempt: the first one's number (from 1), then the lines."""

    first_line_number: int
    lines: list[str]


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """One progress report: what `JobContext.progress` records and the executor forwards."""

    percent: float
    step: str = ""
    message: str = ""
    eta: datetime | None = None
    update_time: datetime = field(default_factory=lambda: datetime.now(UTC))


_NO_TRACER = trace.NoOpTracer()


class JobContext:
    """What a handler gets: the attempt it runs, its payload, and ways to report back.

    `progress` and `log` only enqueue; they are safe to call as often as the handler likes, from
    any thread. `cancelled` is set (on the executor's handler loop) when the scheduler asks to
    stop the attempt (a client cancelled the job, its timeout passed, or the executor is shutting
    down); a handler should notice it and raise `JobCancelledError` (see `raise_if_cancelled`;
    a plain function reads ``ctx.cancelled.is_set()``). An async handler that ignores it is
    cancelled (``asyncio.CancelledError``) after a grace period; a plain one cannot be, and its
    attempt is reported as stopped while its thread runs on.
    """

    def __init__(
        self,
        *,
        job_id: str,
        attempt: int,
        queue: str,
        type: str,
        payload: bytes = b"",
        labels: dict[str, str] | None = None,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
        tenant: str = "",
    ) -> None:
        self.job_id = job_id
        self.tenant = tenant  # whose job it is ("default" unless the submitter named one)
        self.attempt = attempt
        self.queue = queue
        self.type = normalise_type(type)
        self.payload = payload
        self.labels: dict[str, str] = dict(labels or {})
        self.cancelled = asyncio.Event()
        self.dropped_log_lines = 0
        # Reports come from the handler's thread (the loop's or a pool worker) and are taken on
        # the executor's stream thread.
        self._lock = threading.Lock()
        self._progress: ProgressUpdate | None = None
        self._progress_taken = True
        # Set by the executor: told of the first report since the last `take_progress`, so that
        # it goes out at once when the job's rate allows (the executor's progress_interval), not
        # on the next tick. Later reports only replace the value waiting to be taken. Called
        # from the reporting thread, outside the lock.
        self.on_progress: Callable[[], None] = lambda: None
        self._logs: collections.deque[str] = collections.deque(maxlen=max_log_lines)
        self._next_line_number = 1  # lines are numbered per attempt, from 1
        # Tracing (executor/tracing.py): the attempt's span, current while the handler runs
        # (in its thread too, for a plain function), so that spans the handler starts are its
        # children; a tracer of the executor's provider for them. Without tracing: the
        # non-recording span and a no-op tracer (nothing is made). `traceparent`: the context
        # to hand on (TRACEPARENT of a command job), the span's or the one the job came with.
        self.span: trace.Span = trace.INVALID_SPAN
        self.tracer: trace.Tracer = _NO_TRACER
        self.traceparent: str = ""

    def log_fields(self) -> dict[str, str]:
        """What every log line written while the handler runs carries (jobsched.logs)."""
        return {"job_id": self.job_id, "attempt": str(self.attempt), "tenant": self.tenant}

    def json(self) -> Any:
        """The payload decoded as JSON; an empty payload decodes to None.

        A payload that is not JSON raises `NonRetryableError`: a retry would see the same bytes.
        """
        if not self.payload:
            return None
        try:
            return json.loads(self.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise NonRetryableError(f"payload is not valid JSON: {exc}") from exc

    def progress(
        self, percent: float, step: str = "", message: str = "", eta: datetime | None = None
    ) -> None:
        """Report progress. It is sent at once unless this job sent one less than the
        executor's progress_interval ago; then the latest value goes out when the interval
        ends (values reported in between are replaced)."""
        update = ProgressUpdate(
            percent=min(100.0, max(0.0, float(percent))), step=step, message=message, eta=eta
        )
        with self._lock:
            self._progress = update
            first = self._progress_taken
            self._progress_taken = False
        if first:
            self.on_progress()

    def log(self, line: str) -> None:
        """Queue a log line; when the buffer is full the oldest line is dropped (its number is
        not reused, so the scheduler sees a gap there)."""
        with self._lock:
            if self._logs.maxlen is not None and len(self._logs) == self._logs.maxlen:
                self.dropped_log_lines += 1
            self._logs.append(line)
            self._next_line_number += 1

    # Artifacts: set by the executor before the handler starts (executor/artifacts.py).
    artifact_uploader: ArtifactUploader | None = None

    async def upload(
        self, name: str, source: ArtifactSource, content_type: str | None = None
    ) -> Artifact:
        """Store `source` (bytes, or the path of a file, read in chunks) as this job's
        artifact `name`, replacing one of that name an earlier attempt stored; returns it with
        its size and SHA-256. `content_type` defaults to a guess from the name. Raises
        jobsched.errors.JobschedError: RESOURCE_EXHAUSTED past the scheduler's size limits,
        FAILED_PRECONDITION once the attempt no longer runs. A plain ``def`` handler calls
        `upload_blocking` instead."""
        return await self._uploader().upload(self.job_id, self.attempt, name, source, content_type)

    def upload_blocking(
        self, name: str, source: ArtifactSource, content_type: str | None = None
    ) -> Artifact:
        """`upload` for plain ``def`` handlers (they run in a thread): waits for it."""
        return self._uploader().upload_blocking(
            self.job_id, self.attempt, name, source, content_type
        )

    def _uploader(self) -> ArtifactUploader:
        if self.artifact_uploader is None:
            raise RuntimeError("this context was not made by an executor: it cannot upload")
        return self.artifact_uploader

    def raise_if_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise JobCancelledError()

    @property
    def latest_progress(self) -> ProgressUpdate | None:
        return self._progress

    # Used by the executor's sender.

    def take_progress(self) -> ProgressUpdate | None:
        """The latest progress if it changed since the last call, else None."""
        with self._lock:
            if self._progress_taken:
                return None
            self._progress_taken = True
            return self._progress

    def take_logs(self) -> LogLines:
        """All pending log lines, oldest first, with the number of the first; the buffer is
        emptied."""
        # Only the oldest lines are ever dropped, so the buffer holds consecutive numbers
        # ending with the last line logged.
        with self._lock:
            first = self._next_line_number - len(self._logs)
            lines = list(self._logs)
            self._logs.clear()
        return LogLines(first_line_number=first, lines=lines)


def is_async_handler(handler: Handler) -> bool:
    """Whether calling `handler` makes a coroutine (``async def``, also behind functools.partial
    or as an object's ``async def __call__``); other handlers run in a thread."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 (the method itself is inspected)
    )


def check_handler(job_type: str, handler: object) -> None:
    """Raise TypeError unless `handler` can be called with one JobContext: a mistake found when
    it is registered, not as a failure of every job of the type."""
    what = f"the handler for job type {job_type!r}"
    if not callable(handler):
        raise TypeError(f"{what} is not callable: {handler!r}")
    call = getattr(handler, "__call__", None)  # noqa: B004
    if any(
        inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f) for f in (handler, call)
    ):
        raise TypeError(
            f"{what} is a generator function; a handler returns its result (async def or def)"
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # some builtins have no signature to check
    try:
        signature.bind(None)
    except TypeError:
        name = getattr(handler, "__qualname__", type(handler).__qualname__)
        raise TypeError(
            f"{what} must take exactly one positional argument (the JobContext); "
            f"{name}{signature} cannot"
        ) from None


class HandlerRegistry:
    """Handlers by job type (case-insensitive): ``async def`` or plain functions (or other
    callables) taking one JobContext."""

    def __init__(self, handlers: dict[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for job_type, handler in (handlers or {}).items():
            self.register(job_type, handler)

    def register(self, job_type: str, handler: Handler, *, replace: bool = False) -> None:
        """Register `handler` for `job_type`. ValueError for an invalid or taken job type,
        TypeError for a handler that cannot be called with one JobContext."""
        name = normalise_type(job_type)
        if not _TYPE_PATTERN.match(name):
            raise ValueError(f"invalid job type {job_type!r}: must match {_TYPE_PATTERN.pattern}")
        check_handler(name, handler)
        if name in self._handlers and not replace:
            raise ValueError(f"a handler for job type {name!r} is already registered")
        self._handlers[name] = handler

    def handler(self, job_type: str) -> Callable[[Handler], Handler]:
        """Decorator form of `register`."""

        def decorate(fn: Handler) -> Handler:
            self.register(job_type, fn)
            return fn

        return decorate

    def get(self, job_type: str) -> Handler:
        try:
            return self._handlers[normalise_type(job_type)]
        except KeyError:
            raise UnknownJobTypeError(f"no handler for job type {job_type!r}") from None

    def __contains__(self, job_type: object) -> bool:
        return isinstance(job_type, str) and normalise_type(job_type) in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)

    @property
    def types(self) -> list[str]:
        """The registered job types, lower-cased and sorted."""
        return sorted(self._handlers)

    def items(self) -> list[tuple[str, Handler]]:
        """(job type, handler) pairs, by job type."""
        return sorted(self._handlers.items())


def encode_result(value: HandlerResult) -> bytes:
    """What a handler returned, as the bytes of JobResult.result (dicts become JSON). A value
    that cannot be encoded raises NonRetryableError: a retry would return the same kind."""
    try:
        return payloads.encode(value)
    except TypeError as exc:
        raise NonRetryableError(f"handler returned {exc}") from None
    except ValueError as exc:  # json: a circular reference, ...
        raise NonRetryableError(f"handler returned a value that cannot be encoded: {exc}") from None


# Built-in handlers.


async def noop(ctx: JobContext) -> bytes:
    """Does nothing and succeeds."""
    return b""


async def sleep(ctx: JobContext) -> dict[str, Any]:
    """Sleeps for payload {"seconds": float}, reporting progress at each tenth of it (i tenths
    done at i tenths of the time from the start); stops when cancelled."""
    body = ctx.json()
    seconds = 1.0 if body is None else body.get("seconds") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise NonRetryableError('sleep expects a payload like {"seconds": 1.5}')
    total = float(seconds)
    steps = 10
    started = datetime.now(UTC)
    eta = started + timedelta(seconds=total)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(steps):
        ctx.progress(100.0 * i / steps, step="sleeping", eta=eta)
        # Each step ends at its fraction of the total from the start, not from now: a late
        # wake-up shortens the next wait instead of pushing every later step back.
        remaining = start + total * (i + 1) / steps - loop.time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.cancelled.wait(), remaining)
        ctx.raise_if_cancelled()
    ctx.progress(100.0, step="sleeping", eta=eta)
    return {"slept": total}


BUILTIN_HANDLERS: dict[str, Handler] = {"noop": noop, "sleep": sleep}


def builtin_registry(extra: Iterable[tuple[str, Handler]] = ()) -> HandlerRegistry:
    """A registry with the built-in handlers (noop, sleep) plus any extra ones."""
    registry = HandlerRegistry(BUILTIN_HANDLERS)
    for job_type, handler in extra:
        registry.register(job_type, handler)
    return registry
