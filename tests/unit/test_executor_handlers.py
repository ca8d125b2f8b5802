"""The executor's handler SDK: registry, JobContext reporting, and the built-in handlers."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from executor.handlers import (
    HandlerRegistry,
    JobCancelledError,
    JobContext,
    LogLines,
    NonRetryableError,
    UnknownJobTypeError,
    builtin_registry,
    encode_result,
    noop,
    sleep,
)


def make_ctx(payload: bytes = b"", *, max_log_lines: int = 1000) -> JobContext:
    return JobContext(
        job_id="j1",
        attempt=1,
        queue="default",
        type="Sleep",
        payload=payload,
        max_log_lines=max_log_lines,
    )


async def echo(ctx: JobContext) -> bytes:
    return ctx.payload


def test_registry_normalises_types() -> None:
    registry = HandlerRegistry()
    registry.register("  Send.Email ", echo)
    assert registry.types == ["send.email"]
    assert registry.get("SEND.EMAIL") is echo
    assert "send.Email" in registry


def test_registry_rejects_unknown_type() -> None:
    registry = HandlerRegistry({"noop": noop})
    with pytest.raises(UnknownJobTypeError, match="resize"):
        registry.get("resize")
    assert "resize" not in registry


def test_registry_rejects_duplicates_and_invalid_names() -> None:
    registry = HandlerRegistry({"noop": noop})
    with pytest.raises(ValueError, match="already registered"):
        registry.register("NOOP", echo)
    registry.register("NOOP", echo, replace=True)
    assert registry.get("noop") is echo
    with pytest.raises(ValueError, match="invalid job type"):
        registry.register("9lives", echo)


def test_registry_decorator_and_builtins() -> None:
    registry = builtin_registry()

    @registry.handler("Echo")
    async def handler(ctx: JobContext) -> bytes:
        return ctx.payload

    assert registry.types == ["echo", "noop", "sleep"]
    assert registry.get("echo") is handler


def test_progress_keeps_only_the_latest_value() -> None:
    ctx = make_ctx()
    assert ctx.take_progress() is None
    eta = datetime(2030, 1, 1, tzinfo=UTC)
    for percent in (10, 20, 30):
        ctx.progress(percent, step="download", message=f"{percent}%", eta=eta)
    latest = ctx.take_progress()
    assert latest is not None
    assert (latest.percent, latest.step, latest.message, latest.eta) == (30, "download", "30%", eta)
    assert ctx.take_progress() is None  # unchanged since the last take
    ctx.progress(150)
    again = ctx.take_progress()
    assert again is not None
    assert again.percent == 100  # clamped to the documented range


def test_logs_are_bounded_and_drained_in_order() -> None:
    ctx = make_ctx(max_log_lines=3)
    for i in range(5):
        ctx.log(f"line {i}")
    assert ctx.take_logs() == LogLines(3, ["line 2", "line 3", "line 4"])
    assert ctx.dropped_log_lines == 2
    assert ctx.take_logs().lines == []


def test_log_lines_are_numbered_per_attempt_from_one() -> None:
    ctx = make_ctx()
    assert ctx.take_logs() == LogLines(1, [])
    ctx.log("a")
    ctx.log("b")
    assert ctx.take_logs() == LogLines(1, ["a", "b"])
    ctx.log("c")
    assert ctx.take_logs() == LogLines(3, ["c"])
    assert ctx.take_logs() == LogLines(4, [])


def test_a_line_dropped_from_the_buffer_keeps_its_number() -> None:
    ctx = make_ctx(max_log_lines=2)
    ctx.log("1")
    assert ctx.take_logs() == LogLines(1, ["1"])
    for i in range(2, 6):  # lines 2 and 3 are dropped before they are taken
        ctx.log(str(i))
    assert ctx.take_logs() == LogLines(4, ["4", "5"])
    ctx.log("6")
    assert ctx.take_logs() == LogLines(6, ["6"])
    assert ctx.dropped_log_lines == 2


def test_json_payload() -> None:
    assert make_ctx(b'{"a": 1}').json() == {"a": 1}
    assert make_ctx().json() is None
    with pytest.raises(NonRetryableError):
        make_ctx(b"{not json").json()


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(None, b""), (b"\x00raw", b"\x00raw"), ("héllo", "héllo".encode()), ({"n": 1}, b'{"n":1}')],
)
def test_encode_result(value: bytes | str | dict[str, int] | None, encoded: bytes) -> None:
    assert encode_result(value) == encoded


async def test_noop_returns_empty_bytes() -> None:
    assert await noop(make_ctx()) == b""


async def test_sleep_reports_progress_and_finishes() -> None:
    ctx = make_ctx(json.dumps({"seconds": 0.05}).encode())
    assert await sleep(ctx) == {"slept": 0.05}
    latest = ctx.latest_progress
    assert latest is not None
    assert latest.percent == 100
    assert latest.step == "sleeping"
    assert latest.eta is not None


async def test_sleep_stops_promptly_when_cancelled() -> None:
    ctx = make_ctx(json.dumps({"seconds": 60}).encode())
    task = asyncio.create_task(sleep(ctx))
    await asyncio.sleep(0)  # let it start and report its first progress
    first = ctx.take_progress()
    assert first is not None
    assert first.percent == 0
    ctx.cancelled.set()
    with pytest.raises(JobCancelledError):
        await asyncio.wait_for(task, timeout=1.0)


async def test_sleep_rejects_a_bad_payload() -> None:
    with pytest.raises(NonRetryableError):
        await sleep(make_ctx(b'{"seconds": "soon"}'))


# Handlers may be plain functions; register checks what it is given.


def plain(ctx: JobContext) -> bytes:
    return ctx.payload


class CallableHandler:
    def __call__(self, ctx: JobContext) -> str:
        return "called"


def test_registry_accepts_async_and_plain_functions_and_callables() -> None:
    registry = HandlerRegistry()
    registry.register("async", echo)
    registry.register("plain", plain)
    registry.register("lambda", lambda ctx: None)
    registry.register("partial", functools.partial(lambda prefix, ctx: prefix, "x"))
    registry.register("object", CallableHandler())
    registry.register("optional", lambda ctx, retries=3: None)
    registry.register("varargs", lambda *args: None)
    assert registry.types == [
        "async",
        "lambda",
        "object",
        "optional",
        "partial",
        "plain",
        "varargs",
    ]


def needs_two(ctx: JobContext, other: int) -> None:
    pass


def needs_a_keyword(ctx: JobContext, *, other: int) -> None:
    pass


def takes_none() -> None:
    pass


def generates(ctx: JobContext) -> Iterator[int]:
    yield 1


async def generates_async(ctx: JobContext) -> AsyncIterator[int]:
    yield 1


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("not a function", "is not callable"),
        (None, "is not callable"),
        (takes_none, "exactly one positional argument"),
        (needs_two, "exactly one positional argument"),
        (needs_a_keyword, "exactly one positional argument"),
        (generates, "generator"),
        (generates_async, "generator"),
    ],
)
def test_registry_refuses_what_cannot_be_called_with_a_context(handler: Any, message: str) -> None:
    registry = HandlerRegistry()
    with pytest.raises(TypeError, match=message) as raised:
        registry.register("broken", handler)
    assert "'broken'" in str(raised.value)  # names the job type
    assert "broken" not in registry
    with pytest.raises(TypeError, match=message):
        HandlerRegistry({"broken": handler})
    with pytest.raises(TypeError, match=message):
        registry.handler("broken")(handler)


# JobContext reporting is safe from any thread (plain handlers run in a thread pool).


def test_log_lines_from_many_threads_are_numbered_without_gaps_or_repeats() -> None:
    ctx = make_ctx(max_log_lines=100_000)
    threads, lines = 8, 5000
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to expose a race
    try:

        def log_lines(n: int) -> None:
            for i in range(lines):
                ctx.log(f"{n}:{i}")

        workers = [threading.Thread(target=log_lines, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        taken: list[str] = []
        first_numbers: list[int] = []
        while any(w.is_alive() for w in workers):
            batch = ctx.take_logs()
            if batch.lines:
                first_numbers.append(batch.first_line_number)
            taken.extend(batch.lines)
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(previous)
    rest = ctx.take_logs()
    taken.extend(rest.lines)
    assert len(taken) == threads * lines
    assert len(set(taken)) == threads * lines
    # Each batch starts where the previous ended: numbering is consistent with what was taken.
    assert ctx.take_logs().first_line_number == threads * lines + 1
    assert first_numbers == sorted(first_numbers)


def test_progress_from_another_thread_notifies_once_until_taken() -> None:
    ctx = make_ctx()
    notified: list[str] = []
    ctx.on_progress = lambda: notified.append(threading.current_thread().name)

    def report() -> None:
        for percent in (10, 20, 30):
            ctx.progress(percent)

    worker = threading.Thread(target=report, name="worker")
    worker.start()
    worker.join()
    # Told once of the first report; the later ones replaced it before it was taken.
    assert notified == ["worker"]
    latest = ctx.take_progress()
    assert latest is not None
    assert latest.percent == 30
    ctx.progress(40)
    assert notified == ["worker", "MainThread"]


# The built-in sleep handler.


async def test_sleep_reports_each_tenth_at_its_fraction_of_the_total_from_the_start() -> None:
    ctx = make_ctx(json.dumps({"seconds": 1.0}).encode())
    loop = asyncio.get_running_loop()
    reports: list[tuple[float, float]] = []
    started = loop.time()
    report = ctx.progress

    def record(percent: float, step: str = "", message: str = "", eta: Any = None) -> None:
        reports.append((percent, loop.time() - started))
        report(percent, step, message, eta)

    ctx.progress = record  # type: ignore[method-assign]
    assert await sleep(ctx) == {"slept": 1.0}
    elapsed = loop.time() - started
    assert [percent for percent, _ in reports] == [10.0 * i for i in range(11)]
    # The report of i tenths comes i tenths of a second after the start (not i tenths after the
    # previous one), and the whole sleep takes its second.
    for percent, at in reports:
        assert at == pytest.approx(percent / 100, abs=0.09), reports
    assert 1.0 - 0.01 <= elapsed < 1.2
