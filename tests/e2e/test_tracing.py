"""Traces (issue 17): one trace follows a job from the submitting client through the scheduler
to a real executor process and back, each attempt a span of its own; a command job gets
TRACEPARENT; log lines inside a request carry the trace and request ids.

The executor process exports over OTLP/gRPC (OTEL_TRACES_EXPORTER=otlp, as an operator
configures it) to a receiver in the test (`OtlpReceiver`, opentelemetry-proto's TraceService);
the in-process scheduler and client have providers of their own with in-memory exporters."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from jobsched import logs
from jobsched.client import JobschedClient, job_spec
from jobsched.tracing import TracingSettings, valid_traceparent
from jobsched.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.cli import JOBSCHED
from tests.e2e.test_command_jobs import SH_GLOB
from tests.e2e.test_user_handlers import environment, start_executor
from tests.faults.harness import Service
from tests.helpers import assert_eventually
from tests.scripted import serving

S = job_pb2.JobState
FAST_RETRY = {"initial_backoff": timedelta(milliseconds=50), "jitter": 0.0}

HANDLERS = """
import logging

import jobsched
from opentelemetry import trace

log = logging.getLogger("handlers")


@jobsched.handler("traced")
def traced(ctx):  # a plain function: it runs in a pool thread
    with ctx.tracer.start_as_current_span("handler work") as span:
        span.set_attribute("attempt", ctx.attempt)
        # The global tracer (the executor process installs its provider) sees the same
        # current context: its span is a child of "handler work".
        with trace.get_tracer("handlers").start_as_current_span("global tracer work"):
            log.warning("working")
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return {"traceparent": ctx.traceparent}
"""


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind is not None else None


@dataclass
class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace collector: keeps every span it is sent."""

    spans: list[ExportedSpan] = field(default_factory=list)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        ExportedSpan(
                            service=str(attrs.get("service.name", "")),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            events=[
                                (e.name, {a.key: _value(a.value) for a in e.attributes})
                                for e in span.events
                            ],
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    server = grpc.aio.server()
    collector = OtlpReceiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(  # type: ignore[no-untyped-call]
        collector, server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield collector, f"http://127.0.0.1:{port}"
    finally:
        await server.stop(0)


def exported(span: ReadableSpan, service: str) -> ExportedSpan:
    context = span.get_span_context()
    assert context is not None
    return ExportedSpan(
        service=service,
        name=span.name,
        trace_id=f"{context.trace_id:032x}",
        span_id=f"{context.span_id:016x}",
        parent_id=f"{span.parent.span_id:016x}" if span.parent is not None else "",
        attributes=dict(span.attributes or {}),
        events=[(e.name, dict(e.attributes or {})) for e in span.events],
    )


@pytest.fixture
def scheduler_spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def scheduler(
    db: Database, scheduler_spans: InMemorySpanExporter
) -> AsyncIterator[SchedulerServer]:
    tracing = TracingSettings(span_exporter=scheduler_spans, export_delay=0.05)
    async with serving(db, heartbeat_interval=0.5, tracing=tracing) as server:
        yield server


@pytest.fixture
def client_provider() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider, spans
    provider.shutdown()


def traced_environment(endpoint: str, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "traced_handlers.py").write_text(HANDLERS)
    return environment(
        tmp_path,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="executor-under-test",
    )


async def reached(client: JobschedClient, job_id: str, state: int) -> job_pb2.Job:
    async def check() -> job_pb2.Job:
        job = await client.get(job_id)
        assert job.state == state, (S.Name(job.state), job.last_error)
        return job

    return await assert_eventually(check, within=30)


@pytest.mark.timeout(90)
async def test_one_trace_follows_a_job_from_submit_through_each_attempt(
    scheduler: SchedulerServer,
    scheduler_spans: InMemorySpanExporter,
    client_provider: tuple[TracerProvider, InMemorySpanExporter],
    receiver: tuple[OtlpReceiver, str],
    services: list[Service],
    tmp_path: Path,
) -> None:
    collector, endpoint = receiver
    executor = await start_executor(
        services,
        tmp_path,
        scheduler.address,
        "--handlers",
        "traced_handlers",
        env=traced_environment(endpoint, tmp_path),
    )
    provider, client_spans = client_provider
    async with JobschedClient(scheduler.address, timeout=10, tracer_provider=provider) as client:
        submitted = await client.submit_job(
            job_spec("traced", max_attempts=2, retry_policy=FAST_RETRY)
        )
        job_id = submitted.job.id
        job = await reached(client, job_id, S.JOB_STATE_SUCCEEDED)

    [submit] = [
        exported(s, "client")
        for s in client_spans.get_finished_spans()
        if s.name == "jobsched.v1.JobService/SubmitJob"
    ]
    trace_id = submit.trace_id

    def in_trace(spans: list[ExportedSpan], name: str) -> list[ExportedSpan]:
        return [s for s in spans if s.name == name and s.trace_id == trace_id]

    # The executor's spans arrive by OTLP (batched every 100 ms).
    async def executor_spans() -> list[ExportedSpan]:
        spans = list(collector.spans)
        assert len(in_trace(spans, "jobsched.attempt")) == 2
        assert len(in_trace(spans, "handler work")) == 2
        assert len(in_trace(spans, "global tracer work")) == 2
        return spans

    remote = await assert_eventually(executor_spans, within=20)

    async def scheduler_side() -> list[ExportedSpan]:
        scheduler.tracing.force_flush()  # type: ignore[union-attr]
        spans = [exported(s, "scheduler") for s in scheduler_spans.get_finished_spans()]
        assert len(in_trace(spans, "jobsched.record_result")) == 2
        return spans

    local = await assert_eventually(scheduler_side, within=10)

    # The scheduler's SubmitJob span is the client span's child; what the job stored is its
    # context, so every attempt hangs under it.
    [server_submit] = in_trace(local, "jobsched.v1.JobService/SubmitJob")
    assert server_submit.parent_id == submit.span_id
    attempts = sorted(
        in_trace(remote, "jobsched.attempt"), key=lambda s: s.attributes["jobsched.attempt"]
    )
    assert [a.attributes["jobsched.attempt"] for a in attempts] == [1, 2]
    assert {a.parent_id for a in attempts} == {server_submit.span_id}
    assert {a.service for a in attempts} == {"executor-under-test"}
    assert all(a.attributes["jobsched.job_id"] == job_id for a in attempts)
    assert [a.attributes["jobsched.outcome"] for a in attempts] == ["failure", "result"]
    assert attempts[0].events[0][0] == "result"
    assert attempts[0].events[0][1]["retryable"] is True

    # The handler's spans are children of their attempt's (current in the handler's thread).
    handler_spans = in_trace(remote, "handler work")
    assert {h.parent_id for h in handler_spans} == {a.span_id for a in attempts}
    inner = in_trace(remote, "global tracer work")
    assert {i.parent_id for i in inner} == {h.span_id for h in handler_spans}

    # The queue wait of each attempt and the recorded outcomes, in the same trace.
    waits = in_trace(local, "jobsched.queue_wait")
    assert sorted(w.attributes["jobsched.attempt"] for w in waits) == [1, 2]
    assert {w.parent_id for w in waits} == {server_submit.span_id}
    assert all(w.attributes["jobsched.queue_wait_seconds"] >= 0 for w in waits)
    transitions = sorted(
        (r.events[0][1]["attempt"], r.events[0][1]["to"])
        for r in in_trace(local, "jobsched.record_result")
    )
    assert transitions == [(1, "scheduled"), (2, "succeeded")]

    # Background work: the claims that handed the attempts out, and the leader's rounds
    # (each a root span of its own), with their row counts.
    claims = [s for s in local if s.name == "jobsched.claim"]
    assert sum(int(c.attributes["jobsched.claimed"]) for c in claims) >= 2
    assert all(c.parent_id == "" and c.trace_id != trace_id for c in claims)
    duties = {s.name: s for s in local if s.name.startswith(("jobsched.rescue", "jobsched.cron"))}
    assert duties["jobsched.rescue"].attributes["jobsched.rescued"] == 0
    assert duties["jobsched.cron"].attributes["jobsched.fired"] == 0
    retention = [s for s in local if s.name == "jobsched.retention"]
    assert all(r.attributes["jobsched.deleted"] == 0 for r in retention)

    # The handler saw its attempt span's traceparent.
    seen = json.loads(job.result)["traceparent"]
    assert valid_traceparent(seen)
    assert seen.split("-")[1:3] == [trace_id, attempts[1].span_id]

    # The handler's log line carries the job and the trace.
    lines = [json.loads(line) for line in executor.log.read_text().splitlines() if "{" in line]
    working = [line for line in lines if line.get("msg") == "working"]
    assert len(working) == 2
    assert {line["job_id"] for line in working} == {job_id}
    assert {line["tenant"] for line in working} == {"default"}
    assert {line["trace_id"] for line in working} == {trace_id}
    assert {line["span_id"] for line in working} == {i.span_id for i in inner}


@pytest.mark.timeout(90)
async def test_a_command_job_gets_the_attempt_span_as_traceparent(
    scheduler: SchedulerServer,
    client_provider: tuple[TracerProvider, InMemorySpanExporter],
    receiver: tuple[OtlpReceiver, str],
    services: list[Service],
    tmp_path: Path,
) -> None:
    collector, endpoint = receiver
    await start_executor(
        services,
        tmp_path,
        scheduler.address,
        "--allow-command",
        SH_GLOB,
        env=traced_environment(endpoint, tmp_path),
    )
    provider, client_spans = client_provider
    async with JobschedClient(scheduler.address, timeout=10, tracer_provider=provider) as client:
        submitted = await client.submit_job(
            job_spec("command", payload={"argv": ["sh", "-c", 'echo "tp=$TRACEPARENT"']})
        )
        await reached(client, submitted.job.id, S.JOB_STATE_SUCCEEDED)
        printed = [line.line async for line in client.logs(submitted.job.id)]
    [line] = [p for p in printed if p.startswith("tp=")]
    traceparent = line.removeprefix("tp=")
    assert valid_traceparent(traceparent), printed
    [submit] = [s for s in client_spans.get_finished_spans() if s.name.endswith("/SubmitJob")]
    assert submit.context is not None
    _version, trace_id, span_id, _flags = traceparent.split("-")
    assert trace_id == f"{submit.context.trace_id:032x}"

    async def attempt() -> ExportedSpan:
        found = [s for s in collector.spans if s.name == "jobsched.attempt"]
        assert len(found) == 1
        return found[0]

    # TRACEPARENT names the attempt's span: the program's own spans become its children.
    assert (await assert_eventually(attempt, within=20)).span_id == span_id


class _Lines(logging.Handler):
    """Formats each record as it is emitted (inside the request's context), as stdout would."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def rpc_lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger("jobsched.rpc")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_log_lines_inside_a_request_carry_its_trace_and_request_ids(
    scheduler: SchedulerServer,
    client_provider: tuple[TracerProvider, InMemorySpanExporter],
    rpc_lines: _Lines,
) -> None:
    provider, client_spans = client_provider
    tracer = provider.get_tracer("test")
    async with grpc.aio.insecure_channel(scheduler.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        with tracer.start_as_current_span("caller") as caller:
            context = caller.get_span_context()
            traceparent = f"00-{context.trace_id:032x}-{context.span_id:016x}-01"
            call = stub.GetJobStatus(
                job_service_pb2.GetJobStatusRequest(id="00000000-0000-4000-8000-000000000000"),
                metadata=(("traceparent", traceparent), ("x-request-id", "caller-chosen.42")),
            )
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await call
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND
        # The request id comes back in the initial metadata.
        assert ("x-request-id", "caller-chosen.42") in tuple(await call.initial_metadata())
        # Without one (or with one we do not keep), the server makes one and says which.
        other = stub.GetJobStatus(
            job_service_pb2.GetJobStatusRequest(id="00000000-0000-4000-8000-000000000000"),
            metadata=(("x-request-id", "not valid, spaces"),),
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await other
        made = dict(tuple(await other.initial_metadata()))["x-request-id"]
        assert made != "not valid, spaces"
        assert len(made) == 16

    async def logged() -> list[dict[str, Any]]:
        found = [line for line in rpc_lines.lines if line.get("method", "").endswith("Status")]
        assert len(found) == 2
        return found

    first, second = await assert_eventually(logged, within=5)
    assert first["request_id"] == "caller-chosen.42"
    assert first["trace_id"] == f"{context.trace_id:032x}"
    assert len(first["span_id"]) == 16
    assert first["span_id"] != f"{context.span_id:016x}"  # the server's span, the caller's child
    assert second["request_id"] == made
    assert len(second["trace_id"]) == 32  # a trace of its own
    assert second["trace_id"] != first["trace_id"]
    assert client_spans.get_finished_spans()  # the caller's span ended


async def test_without_tracing_nothing_is_made_and_the_context_still_travels(
    db: Database, client_provider: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Tracing off (the default): no provider and no span interceptor, but a traceparent a
    client sends is stored with its job as it came, for executors that trace."""
    async with serving(db) as server:
        assert server.tracing is None
        assert server.dispatcher.tracer is None
        assert server.dispatcher.job_spans is None
        provider, _spans = client_provider
        async with JobschedClient(server.address, timeout=10, tracer_provider=provider) as client:
            job = await client.submit("noop")
        async with db.read() as conn:
            stored = (
                await conn.execute(
                    text("SELECT trace_context FROM jobs WHERE id = :id"), {"id": job.id}
                )
            ).scalar_one()
    assert valid_traceparent(stored)
    [submit] = [s for s in _spans.get_finished_spans() if s.name.endswith("/SubmitJob")]
    assert submit.context is not None
    assert stored.split("-")[1:3] == [
        f"{submit.context.trace_id:032x}",
        f"{submit.context.span_id:016x}",
    ]


@pytest.mark.timeout(60)
async def test_the_cli_traces_its_command_and_continues_traceparent(
    scheduler: SchedulerServer, db: Database, receiver: tuple[OtlpReceiver, str]
) -> None:
    """`jobsched` with OTEL_* set: a span for the command and a client span per call, in the
    trace of TRACEPARENT from its environment (as inside a command job)."""
    collector, endpoint = receiver
    outer_trace, outer_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    process = await asyncio.create_subprocess_exec(
        JOBSCHED,
        "--address",
        scheduler.address,
        "submit",
        "--type",
        "noop",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "TRACEPARENT": f"00-{outer_trace}-{outer_span}-01",
        },
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    job_id = json.loads(out)["id"]

    # Exported before the CLI exits (its provider is shut down at the end of the command).
    commands = [s for s in collector.spans if s.name == "jobsched submit"]
    assert [(c.trace_id, c.parent_id, c.service) for c in commands] == [
        (outer_trace, outer_span, "jobsched-cli")
    ]
    [call] = [s for s in collector.spans if s.name == "jobsched.v1.JobService/SubmitJob"]
    assert (call.trace_id, call.parent_id) == (outer_trace, commands[0].span_id)
    async with db.read() as conn:
        stored = (
            await conn.execute(
                text("SELECT trace_context FROM jobs WHERE id = :id"), {"id": job_id}
            )
        ).scalar_one()
    assert stored.split("-")[1] == outer_trace


async def test_bad_tracing_settings_are_refused_naming_the_variable(
    scheduler: SchedulerServer,
) -> None:
    process = await asyncio.create_subprocess_exec(
        JOBSCHED,
        "--address",
        scheduler.address,
        "status",
        "00000000-0000-4000-8000-000000000000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "zipkin"},
    )
    async with asyncio.timeout(30):
        _out, err = await process.communicate()
    assert process.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in err.decode()
    assert "'zipkin' is not one of none, otlp, console" in err.decode()
