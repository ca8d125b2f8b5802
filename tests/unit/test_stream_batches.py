"""take_batch on both ends of the Connect stream: runs merged, order kept, the close seen."""

from __future__ import annotations

import asyncio

from executor import runner
from jobsched import batching
from jobsched.v1 import executor_service_pb2 as pb
from scheduler.api import executor_service


def attempt(n: int) -> pb.JobAttempt:
    return pb.JobAttempt(job_id=f"{n:08d}-0000-4000-8000-000000000000", attempt=1)


def test_scheduler_side_merges_runs_and_keeps_the_order() -> None:
    outbox: asyncio.Queue[pb.ConnectResponse | None] = asyncio.Queue()
    messages = [
        pb.ConnectResponse(assignment=pb.Assignment(attempt=attempt(1), type="t")),
        pb.ConnectResponse(assignment=pb.Assignment(attempt=attempt(2), type="t")),
        pb.ConnectResponse(cancel=pb.CancelAssignment(attempt=attempt(1))),
        pb.ConnectResponse(result_ack=pb.ResultAck(attempt=attempt(3), accepted=True)),
        pb.ConnectResponse(result_ack=pb.ResultAck(attempt=attempt(4), accepted=True)),
        pb.ConnectResponse(assignment=pb.Assignment(attempt=attempt(5), type="t")),
    ]
    for m in messages[1:]:
        outbox.put_nowait(m)
    out, closed = executor_service.take_batch(messages[0], outbox)
    assert not closed
    assert [m.WhichOneof("message") for m in out] == [
        "assignments",
        "cancel",
        "result_acks",
        "assignment",  # alone: sent as it was
    ]
    assert [a.attempt.job_id for a in out[0].assignments.assignments] == [
        attempt(1).job_id,
        attempt(2).job_id,
    ]
    assert [a.attempt.job_id for a in out[2].result_acks.acks] == [
        attempt(3).job_id,
        attempt(4).job_id,
    ]
    assert outbox.empty()


def test_scheduler_side_sees_the_close_and_keeps_what_came_before() -> None:
    outbox: asyncio.Queue[pb.ConnectResponse | None] = asyncio.Queue()
    outbox.put_nowait(pb.ConnectResponse(result_ack=pb.ResultAck(attempt=attempt(2))))
    outbox.put_nowait(None)
    outbox.put_nowait(pb.ConnectResponse(result_ack=pb.ResultAck(attempt=attempt(3))))
    first = pb.ConnectResponse(result_ack=pb.ResultAck(attempt=attempt(1)))
    out, closed = executor_service.take_batch(first, outbox)
    assert closed
    assert len(out) == 1
    assert len(out[0].result_acks.acks) == 2


def test_scheduler_side_takes_at_most_max_batch() -> None:
    outbox: asyncio.Queue[pb.ConnectResponse | None] = asyncio.Queue()
    total = batching.MAX_BATCH + 5
    for n in range(1, total):
        outbox.put_nowait(pb.ConnectResponse(assignment=pb.Assignment(attempt=attempt(n))))
    first = pb.ConnectResponse(assignment=pb.Assignment(attempt=attempt(0)))
    out, _ = executor_service.take_batch(first, outbox)
    assert len(out[0].assignments.assignments) == batching.MAX_BATCH
    assert outbox.qsize() == 5


def test_executor_side_merges_acks_and_results() -> None:
    outbox: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
    rest = [
        pb.ConnectRequest(ack=pb.AssignmentAck(attempt=attempt(2))),
        pb.ConnectRequest(heartbeat=pb.Heartbeat()),
        pb.ConnectRequest(result=pb.JobResult(attempt=attempt(1), result=b"a")),
        pb.ConnectRequest(result=pb.JobResult(attempt=attempt(2), result=b"b")),
        pb.ConnectRequest(result=pb.JobResult(attempt=attempt(3), result=b"c")),
    ]
    for m in rest:
        outbox.put_nowait(m)
    first = pb.ConnectRequest(ack=pb.AssignmentAck(attempt=attempt(1)))
    out, closed = runner.take_batch(first, outbox)
    assert not closed
    assert [m.WhichOneof("message") for m in out] == ["acks", "heartbeat", "results"]
    assert len(out[0].acks.acks) == 2
    assert [r.result for r in out[2].results.results] == [b"a", b"b", b"c"]


def test_executor_side_takes_at_most_max_batch_and_sees_the_close() -> None:
    outbox: asyncio.Queue[pb.ConnectRequest | None] = asyncio.Queue()
    for n in range(1, batching.MAX_BATCH + 3):
        outbox.put_nowait(pb.ConnectRequest(ack=pb.AssignmentAck(attempt=attempt(n))))
    outbox.put_nowait(None)
    first = pb.ConnectRequest(ack=pb.AssignmentAck(attempt=attempt(0)))
    out, closed = runner.take_batch(first, outbox)
    assert not closed
    assert len(out[0].acks.acks) == batching.MAX_BATCH
    out, closed = runner.take_batch(outbox.get_nowait() or first, outbox)
    assert closed
    assert [a.attempt.job_id for a in out[0].acks.acks] == [
        attempt(batching.MAX_BATCH).job_id,
        attempt(batching.MAX_BATCH + 1).job_id,
        attempt(batching.MAX_BATCH + 2).job_id,
    ]
