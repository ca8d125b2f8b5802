"""The dashboard's JSON API and event streams against a real scheduler (gRPC on port 0) and a
real PostgreSQL, over real HTTP: sessions and CSRF, the jobs list's keyset cursor, submit with
BadRequest field violations passed through, job detail, the job actions, queues, overview, and
the SSE bridge of WatchJob and WatchJobs."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest

from dashboard import api
from dashboard.serving import DashboardServer
from jobsched.client import JobschedClient
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.dashboard.harness import ARTIFACTS, Viewer, dashboard_for, executing
from tests.helpers import assert_eventually
from tests.scripted import serving


@pytest.fixture
async def dashboard(scheduler: SchedulerServer) -> AsyncIterator[DashboardServer]:
    async with dashboard_for(scheduler.address) as server:
        yield server


@pytest.fixture
async def viewer(dashboard: DashboardServer) -> AsyncIterator[Viewer]:
    browser = Viewer(dashboard.url)
    await browser.open()
    yield browser
    await browser.close()


async def job_ids(viewer: Viewer, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = ""
    while True:
        answer = await viewer.get("/api/jobs", cursor=cursor, **params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        ids += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            return ids


async def test_a_session_without_auth_may_do_everything_and_its_cookie_is_httponly(
    dashboard: DashboardServer,
) -> None:
    viewer = Viewer(dashboard.url)
    try:
        answer = await viewer.http.get("/api/session")
        assert answer.status_code == 200
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        body = answer.json()
        assert body["signed_in"] is False
        assert body["auth_required"] is False
        assert {"jobs.read", "jobs.submit", "jobs.operate", "queues.manage"} <= set(
            body["permissions"]
        )
        assert answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    finally:
        await viewer.close()


async def test_mutating_calls_without_the_csrf_token_or_from_another_origin_change_nothing(
    viewer: Viewer,
) -> None:
    no_token = await viewer.http.post("/api/jobs", json={"type": "steps"})
    assert no_token.status_code == 403
    assert no_token.json()["error"]["reason"] == "CSRF_CHECK_FAILED"
    other_origin = await viewer.http.post(
        "/api/jobs",
        json={"type": "steps"},
        headers={"x-csrf-token": viewer.csrf, "origin": "https://evil.example"},
    )
    assert other_origin.status_code == 403
    stranger = Viewer(str(viewer.http.base_url))
    try:
        no_session = await stranger.post("/api/jobs", {"type": "steps"})
    finally:
        await stranger.close()
    assert no_session.status_code == 403
    assert await job_ids(viewer) == []


async def test_submit_passes_field_violations_through_with_their_field_names(
    viewer: Viewer,
) -> None:
    missing = await viewer.post("/api/jobs", {"type": "", "priority": "3000"})
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert error["reason"] == "INVALID_ARGUMENT"
    fields = {v["field"] for v in error["field_violations"]}
    assert "job.type" in fields
    assert "job.priority" in fields
    bad_json = await viewer.post("/api/jobs", {"type": "steps", "payload": "{nope"})
    assert bad_json.status_code == 400
    assert [v["field"] for v in bad_json.json()["error"]["field_violations"]] == ["payload"]
    assert await job_ids(viewer) == []

    made = await viewer.post(
        "/api/jobs", {"type": "steps", "queue": "Mail", "priority": "70", "payload": '{"a": 1}'}
    )
    assert made.status_code == 201, made.text
    job = made.json()["job"]
    assert (job["type"], job["queue"], job["priority"], job["state"]) == (
        "steps",
        "mail",
        70,
        "QUEUED",
    )
    assert job["payload"] == {"a": 1}


async def test_the_jobs_list_pages_with_the_keyset_cursor_and_filters(
    viewer: Viewer, scheduler: SchedulerServer
) -> None:
    async with JobschedClient(scheduler.address) as client:
        made = await client.submit_many(
            [{"type": "a", "queue": "q1"} for _ in range(130)]
            + [{"type": "b", "queue": "q2"} for _ in range(20)]
        )
        await client.cancel(made[0].id)
    every = await job_ids(viewer, page_size=40)
    assert sorted(every) == sorted(j.id for j in made)
    assert len(every) == len(set(every)) == 150
    # The active list first (oldest first), then the finished ones.
    assert every[-1] == made[0].id
    assert len(await job_ids(viewer, queue="q2", page_size=7)) == 20
    assert await job_ids(viewer, state="CANCELLED") == [made[0].id]
    assert len(await job_ids(viewer, state="QUEUED", type="a")) == 129
    bad = await viewer.get("/api/jobs", state="sleepy")
    assert bad.status_code == 400
    assert bad.json()["error"]["field_violations"][0]["field"] == "state"
    forged = await viewer.get("/api/jobs", cursor="bm90IGEgY3Vyc29y")
    assert forged.status_code == 400


async def test_the_jobs_list_filters_by_label_across_pages_each_job_once(
    viewer: Viewer, scheduler: SchedulerServer
) -> None:
    async with JobschedClient(scheduler.address) as client:
        made = await client.submit_many(
            [{"type": "a", "labels": {"team": "red" if n % 7 == 0 else "blue"}} for n in range(90)]
            + [{"type": "a"} for _ in range(10)]
        )
        red = [j.id for n, j in enumerate(made) if n < 90 and n % 7 == 0]
        await client.cancel(red[0])
    # Small pages: most scheduler pages hold no red job, the cursor still carries on.
    found = await job_ids(viewer, label="team=red", page_size=3)
    assert sorted(found) == sorted(red)
    assert len(found) == len(set(found))
    assert found[-1] == red[0]  # the finished one after the active ones
    assert len(await job_ids(viewer, label="team", page_size=50)) == 90
    assert await job_ids(viewer, label="team=red", state="CANCELLED") == [red[0]]
    assert await job_ids(viewer, label="team=green") == []
    both = await viewer.http.get(
        "/api/jobs", params=[("label", "team=red"), ("label", "team=blue")]
    )
    assert both.json()["jobs"] == []
    bad = await viewer.get("/api/jobs", label="=red")
    assert bad.status_code == 400
    assert bad.json()["error"]["field_violations"][0]["field"] == "label"


async def test_job_detail_actions_and_the_live_stream(
    viewer: Viewer, scheduler: SchedulerServer
) -> None:
    async with executing(scheduler.address):
        job = (await viewer.post("/api/jobs", {"type": "steps"})).json()["job"]
        seen: list[tuple[str, Any]] = []
        async for name, data in viewer.events(f"/api/jobs/{job['id']}/events"):
            seen.append((name, data))
            if name == "end":
                break
        kinds = [name for name, _ in seen]
        assert kinds[0] == "snapshot"
        assert "progress" in kinds
        transitions = [data["to"] for name, data in seen if name == "transition"]
        assert transitions[-1] == "SUCCEEDED"

        detail = (await viewer.get(f"/api/jobs/{job['id']}")).json()
        assert detail["job"]["state"] == "SUCCEEDED"
        assert detail["job"]["result"] == {"done": True}
        assert [e["to"] for e in detail["events"]][-1] == "SUCCEEDED"
        assert [(a["attempt"], a["outcome"]) for a in detail["attempts"]] == [(1, "SUCCEEDED")]
        assert [line["text"] for line in detail["logs"]][-1] == "line 5"

        failing = (await viewer.post("/api/jobs", {"type": "fail", "priority": 10})).json()
        failing_id = failing["job"]["id"]

        async def dead() -> dict[str, Any]:
            body: dict[str, Any] = (await viewer.get(f"/api/jobs/{failing_id}")).json()
            assert body["job"]["state"] in {"SCHEDULED", "DEAD"}
            assert body["attempts"], "no attempt yet"
            return body

        body = await assert_eventually(dead, within=15)
        assert "it broke" in body["attempts"][0]["error"]

    held = (await viewer.post("/api/jobs", {"type": "nobody-runs-this"})).json()["job"]
    priority = await viewer.post(f"/api/jobs/{held['id']}/priority", {"priority": 90})
    assert priority.status_code == 200
    assert priority.json()["job"]["priority"] == 90
    cancelled = await viewer.post(f"/api/jobs/{held['id']}/cancel", {"reason": "test"})
    assert cancelled.json()["job"]["state"] == "CANCELLED"
    again = await viewer.post(f"/api/jobs/{held['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["reason"] == "INVALID_TRANSITION"
    retried = await viewer.post(f"/api/jobs/{held['id']}/retry")
    assert retried.json()["job"]["state"] == "QUEUED"
    await viewer.post(f"/api/jobs/{held['id']}/cancel")
    assert (await viewer.delete(f"/api/jobs/{held['id']}")).status_code == 204
    gone = await viewer.get(f"/api/jobs/{held['id']}")
    assert gone.status_code == 404
    assert gone.json()["error"]["reason"] == "JOB_NOT_FOUND"


async def test_artifacts_are_listed_and_streamed_through_with_their_checksums(
    viewer: Viewer, scheduler: SchedulerServer
) -> None:
    async with executing(scheduler.address):
        job = (await viewer.post("/api/jobs", {"type": "artifacts"})).json()["job"]
        async for name, _data in viewer.events(f"/api/jobs/{job['id']}/events"):
            if name == "end":
                break
    listed = await viewer.get(f"/api/jobs/{job['id']}/artifacts")
    assert listed.status_code == 200, listed.text
    artifacts = {a["name"]: a for a in listed.json()["artifacts"]}
    assert sorted(artifacts) == sorted(ARTIFACTS)
    for name, (data, content_type) in ARTIFACTS.items():
        assert artifacts[name]["size_bytes"] == len(data)
        assert artifacts[name]["sha256"] == hashlib.sha256(data).hexdigest()
        answer = await viewer.http.get(f"/api/jobs/{job['id']}/artifacts/{quote(name)}")
        assert answer.status_code == 200
        assert answer.content == data
        assert answer.headers["content-length"] == str(len(data))
        assert answer.headers["content-disposition"].startswith("attachment;")
        assert answer.headers["x-artifact-sha256"] == hashlib.sha256(data).hexdigest()
        if content_type:
            assert answer.headers["content-type"].startswith(content_type)
    assert (
        "filename*=UTF-8''data%20%C3%A9.bin"
        in (
            await viewer.http.get(f"/api/jobs/{job['id']}/artifacts/{quote('out/data é.bin')}")
        ).headers["content-disposition"]
    )
    missing = await viewer.get(f"/api/jobs/{job['id']}/artifacts/nothing.txt")
    assert missing.status_code == 404
    assert missing.json()["error"]["reason"] == "ARTIFACT_NOT_FOUND"
    unknown = await viewer.get("/api/jobs/00000000-0000-0000-0000-000000000000/artifacts")
    assert unknown.status_code == 404


async def test_rates_count_submits_finishes_and_failures_of_the_last_hour(
    viewer: Viewer,
    scheduler: SchedulerServer,
    dashboard: DashboardServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with executing(scheduler.address):
        ids = [
            (await viewer.post("/api/jobs", {"type": kind})).json()["job"]["id"]
            for kind in ("steps", "doomed", "doomed", "nobody-runs-this", "nobody-runs-this")
        ]

        async def finished() -> None:
            for job_id in ids[:3]:
                state = (await viewer.get(f"/api/jobs/{job_id}")).json()["job"]["state"]
                assert state in {"SUCCEEDED", "DEAD"}, state

        await assert_eventually(finished, within=15)
    answer = await viewer.get("/api/rates")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    buckets = body["buckets"]
    assert len(buckets) == 12
    assert body["bucket_seconds"] == 300
    assert body["submitted_complete"] is True
    assert body["finished_complete"] is True
    assert sum(b["submitted"] for b in buckets) == 5
    assert sum(b["finished"] for b in buckets) == 3
    assert sum(b["failed"] for b in buckets) == 2
    # All of it just now: the last bucket.
    assert (buckets[-1]["submitted"], buckets[-1]["finished"], buckets[-1]["failed"]) == (5, 3, 2)
    assert buckets[-1]["failure_rate"] == pytest.approx(2 / 3)
    assert buckets[0]["failure_rate"] is None
    assert buckets[0]["start"] == body["since"]
    # Beyond what the dashboard reads for a chart: the series say they are incomplete.
    monkeypatch.setattr(api, "RATE_PAGE", 2)
    monkeypatch.setattr(api, "RATE_PAGES", 1)
    other = Viewer(dashboard.url)
    await other.open()
    try:
        partial = (await other.get("/api/rates")).json()
    finally:
        await other.close()
    assert partial["finished_complete"] is False
    assert partial["submitted_complete"] is False
    assert sum(b["finished"] for b in partial["buckets"]) == 2


async def test_queues_pause_and_resume_and_the_overview_counts(viewer: Viewer) -> None:
    for _ in range(3):
        await viewer.post("/api/jobs", {"type": "x", "queue": "reports"})
    paused = await viewer.post("/api/queues/reports/pause")
    assert paused.json()["queue"]["paused"] is True
    queues = {q["name"]: q for q in (await viewer.get("/api/queues")).json()["queues"]}
    assert queues["reports"]["paused"] is True
    assert queues["reports"]["jobs_by_state"]["QUEUED"] == 3
    resumed = await viewer.post("/api/queues/reports/resume")
    assert resumed.json()["queue"]["paused"] is False
    overview = (await viewer.get("/api/overview")).json()
    assert overview["jobs_by_state"]["QUEUED"] == 3
    assert overview["cluster"]["replicas"], "the cluster view is there without auth"
    bad = await viewer.post("/api/queues/Not A Name!/pause")
    assert bad.status_code == 400


async def test_watch_jobs_streams_changes_of_many_jobs(viewer: Viewer) -> None:
    stream = viewer.events("/api/events/jobs?queue=live")
    name, _ = await anext(stream)
    assert name == "subscribed"
    made = (await viewer.post("/api/jobs", {"type": "x", "queue": "live"})).json()["job"]
    name, data = await anext(stream)
    assert name == "job"
    assert data["id"] == made["id"]
    assert data["state"] == "QUEUED"
    await stream.aclose()


async def test_schedules_pause_resume_and_trigger(
    viewer: Viewer, scheduler: SchedulerServer
) -> None:
    async with JobschedClient(scheduler.address) as client:
        await client.create_schedule("nightly", "0 3 * * *", {"type": "report", "queue": "q"})
    listed = (await viewer.get("/api/schedules")).json()["schedules"]
    assert [(s["name"], s["cron"], s["type"], s["paused"]) for s in listed] == [
        ("nightly", "0 3 * * *", "report", False)
    ]
    assert listed[0]["next_fire_times"], "an active schedule has next fire times"
    assert viewer.session["permissions"].count("schedules.manage") == 1
    paused = await viewer.post("/api/schedules/nightly/pause")
    assert paused.json()["schedule"]["paused"] is True
    resumed = await viewer.post(f"/api/schedules/{listed[0]['id']}/resume")
    assert resumed.json()["schedule"]["paused"] is False
    triggered = (await viewer.post("/api/schedules/nightly/trigger")).json()
    assert triggered["skipped"] is False
    assert triggered["job"]["type"] == "report"
    assert await job_ids(viewer, queue="q") == [triggered["job"]["id"]]
    unknown = await viewer.post("/api/schedules/nope/pause")
    assert unknown.status_code == 404


async def test_dead_letters_are_retried_in_bulk_by_queue_and_type(
    viewer: Viewer, scheduler: SchedulerServer
) -> None:
    async with executing(scheduler.address):
        made = [
            (await viewer.post("/api/jobs", {"type": "doomed", "queue": q})).json()["job"]["id"]
            for q in ("a", "a", "b")
        ]

        async def dead() -> None:
            assert len(await job_ids(viewer, state="DEAD")) == 3

        await assert_eventually(dead, within=20)
    retried = (await viewer.post("/api/dead-letters/retry", {"queue": "a"})).json()
    assert retried == {"retried": 2, "more": False}
    assert await job_ids(viewer, state="DEAD") == [made[2]]
    assert sorted(await job_ids(viewer, state="QUEUED", queue="a")) == sorted(made[:2])


async def test_the_cluster_shows_replicas_and_executors(db: Database) -> None:
    # Presence rows (which the cluster view reads) written every 0.2 s rather than every few.
    async with (
        serving(db, presence_interval=0.2) as scheduler,
        dashboard_for(scheduler.address) as dashboard,
        executing(scheduler.address),
    ):
        viewer = Viewer(dashboard.url)
        try:
            await viewer.open()

            async def listed() -> None:
                cluster = (await viewer.get("/api/cluster")).json()
                [replica] = cluster["replicas"]
                assert replica["leader"] is True
                executors = [(e["name"], e["capacity"]) for e in replica["executors"]]
                assert executors == [("dash-e", 4)]

            await assert_eventually(listed, within=10)
        finally:
            await viewer.close()


async def test_viewers_of_one_job_share_one_stream_and_a_late_one_starts_from_now(
    viewer: Viewer, dashboard: DashboardServer, scheduler: SchedulerServer
) -> None:
    feeds = dashboard.app.state.feeds
    other = Viewer(dashboard.url)
    await other.open()
    try:
        async with executing(scheduler.address):
            job = (await viewer.post("/api/jobs", {"type": "forever"})).json()["job"]
            first = viewer.events(f"/api/jobs/{job['id']}/events")

            async def until(stream: Any, wanted: str) -> list[tuple[str, Any]]:
                seen = []
                async for name, data in stream:
                    seen.append((name, data))
                    if name == wanted:
                        return seen
                raise AssertionError(f"the stream ended before {wanted}: {seen}")

            assert (await until(first, "progress"))[0][0] == "snapshot"
            assert len(feeds) == 1
            late = other.events(f"/api/jobs/{job['id']}/events")
            name, snapshot = await anext(late)
            assert name == "snapshot"
            assert snapshot["state"] == "RUNNING"
            assert snapshot["progress"]["step"] == "waiting"
            assert len(feeds) == 1, "the second viewer got a stream of its own"
            await viewer.post(f"/api/jobs/{job['id']}/cancel")
            for stream in (first, late):
                seen = await until(stream, "end")
                assert [d["to"] for n, d in seen if n == "transition"][-1] == "CANCELLED"
                await stream.aclose()

            async def gone() -> None:
                assert len(feeds) == 0

            await assert_eventually(gone)
    finally:
        await other.close()
