"""The dashboard's per-viewer SSE buffers (dashboard/sse_buffers.py): bounded whatever the viewer's
speed; progress collapsed to the latest value, log lines beyond the cap dropped and counted,
the snapshot and every transition (so the final state) always kept; for many jobs, the latest
change per job, and a reset past the cap."""

from __future__ import annotations

from dashboard.sse_buffers import JobBuffer, JobsBuffer


async def drain(buffer: JobBuffer | JobsBuffer) -> list[tuple[str, dict[str, object]]]:
    buffer.close()
    out = []
    while (item := await buffer.get(0.01)) is not None:
        out.append((item[0], item[1]))
    return out


async def test_a_slow_viewer_gets_the_latest_progress_and_every_transition() -> None:
    buffer = JobBuffer(max_lines=3)
    buffer.put("snapshot", {"state": "QUEUED"}, 1)
    buffer.put("transition", {"to": "RUNNING"}, 2)
    for n in range(1000):
        buffer.put("progress", {"percent": n / 10}, 3 + n)
    for n in range(10):
        buffer.put("log", {"text": f"line {n}"})
    buffer.put("transition", {"to": "SUCCEEDED"}, 2000)
    # snapshot, two transitions, one progress, three lines, one dropped notice
    assert len(buffer) == 8
    items = await drain(buffer)
    assert [name for name, _ in items] == [
        "snapshot",
        "transition",
        "progress",
        "log",
        "log",
        "log",
        "dropped",
        "transition",
    ]
    assert items[2][1] == {"percent": 99.9}
    assert items[6][1] == {"lines": 7}
    assert items[-1][1] == {"to": "SUCCEEDED"}


async def test_many_jobs_keep_the_latest_change_of_each_and_reset_past_the_cap() -> None:
    buffer = JobsBuffer(max_jobs=2)
    buffer.put_job({"id": "a", "state": "QUEUED"})
    buffer.put_job({"id": "a", "state": "RUNNING"})
    buffer.put_job({"id": "b", "state": "QUEUED"})
    assert await buffer.get(0.01) == ("job", {"id": "a", "state": "RUNNING"}, None)
    buffer.put_job({"id": "c", "state": "QUEUED"})
    buffer.put_job({"id": "d", "state": "QUEUED"})  # three pending: past the cap
    assert await drain(buffer) == [("changes_dropped", {})]


async def test_an_idle_stream_gets_keepalives() -> None:
    buffer = JobBuffer()
    assert await buffer.get(0.01) == ("keepalive", {}, None)
