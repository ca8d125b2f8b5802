"""The dashboard in a real browser: submit from the form and watch the progress bar reach
SUCCEEDED, cancel a running job, scroll through 1,000 jobs finding each exactly once, filter by
state and queue, and by label, a job's dependency graph and artifact downloads, the overview's
rate charts, pause and resume a queue, and no action buttons for a viewer key; each page
screenshotted (test-artifacts/browser/) and checked with axe-core."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from dashboard.serving import DashboardServer
from jobsched.async_client import AsyncClient
from jobsched.client import JobschedClient
from jobsched.jobs import JobFailedError
from jobsched.v1 import job_pb2
from scheduler.domain.auth import new_key
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.browser.conftest import screenshot, serious_violations
from tests.dashboard.harness import ARTIFACTS, dashboard_for
from tests.scripted import serving

# The first test's setup may build the front end (npm ci, next build) and install chromium
# (apt-get) when `make test` has not done it already; the steps inside a test each wait a few
# seconds at most (Playwright's expect timeouts).
pytestmark = pytest.mark.timeout(600)


async def test_submit_from_the_form_and_watch_the_progress_bar_reach_succeeded(
    page: Page, dashboard: DashboardServer
) -> None:
    await page.goto(dashboard.url + "/submit/")
    await page.get_by_label("Type").fill("")
    await page.get_by_label("Priority").fill("5000")
    await page.get_by_role("button", name="Submit").click()
    # The scheduler's field violations, next to their fields.
    await expect(page.locator("#type-error")).to_be_visible()
    await expect(page.locator("#priority-error")).to_be_visible()
    assert await serious_violations(page) == []
    await screenshot(page, "submit-violations")

    await page.get_by_label("Type").fill("steps")
    await page.get_by_label("Priority").fill("60")
    await page.get_by_label("Payload (JSON)").fill('{"size": 3}')
    await page.get_by_role("button", name="Submit").click()
    await expect(page).to_have_url(re.compile(r"/jobs/detail/\?id="))
    bar = page.get_by_role("progressbar", name="Progress")
    # Moving: a value strictly between 0 and 100 is seen before the end.
    await expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^([1-9]|[1-9][0-9])$"))
    await expect(page.get_by_test_id("progress-text")).to_contain_text("step")
    await expect(page.get_by_test_id("job-state")).to_have_text("SUCCEEDED", timeout=15_000)
    await expect(bar).to_have_attribute("aria-valuenow", "100")
    await expect(page.get_by_test_id("timeline")).to_contain_text("SUCCEEDED")
    await expect(page.get_by_test_id("logs")).to_contain_text("line 5")
    assert await serious_violations(page) == []
    await screenshot(page, "job-detail")


async def test_cancel_a_running_job(page: Page, dashboard: DashboardServer) -> None:
    api_session = await page.request.get(dashboard.url + "/api/session")
    csrf = (await api_session.json())["csrf_token"]
    made = await page.request.post(
        dashboard.url + "/api/jobs", data={"type": "forever"}, headers={"x-csrf-token": csrf}
    )
    job_id = (await made.json())["job"]["id"]
    await page.goto(f"{dashboard.url}/jobs/detail/?id={job_id}")
    await expect(page.get_by_test_id("job-state")).to_have_text("RUNNING", timeout=10_000)
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Cancel job").click()
    await expect(page.get_by_test_id("job-state")).to_have_text("CANCELLED", timeout=10_000)
    await expect(page.get_by_role("button", name="Retry job")).to_be_visible()


async def test_scroll_through_a_thousand_jobs_finding_each_exactly_once(
    page: Page, dashboard: DashboardServer, scheduler: SchedulerServer
) -> None:
    async with JobschedClient(scheduler.address, timeout=30) as client:
        made: list[str] = []
        for _ in range(2):
            made += [j.id for j in await client.submit_many([{"type": "idle"}] * 500)]
    await page.goto(dashboard.url + "/jobs/")
    rows = page.get_by_role("region", name="Job list, scroll to load more")
    await expect(page.get_by_test_id("loaded")).to_contain_text("100 jobs loaded")
    assert await serious_violations(page) == []
    await screenshot(page, "jobs")
    seen: dict[int, str] = {}
    for _ in range(400):
        visible: list[list[str]] = await page.eval_on_selector_all(
            "li[data-index]", "els => els.map(e => [e.dataset.index, e.dataset.jobId])"
        )
        for index, job_id in visible:
            assert seen.setdefault(int(index), job_id) == job_id, f"row {index} changed"
        done = await page.get_by_test_id("loaded").text_content()
        if len(seen) >= 1000 and done is not None and "(all)" in done:
            break
        await rows.evaluate("el => el.scrollBy(0, 500)")
        await page.wait_for_function(
            "([el, top]) => el.scrollTop > top || el.scrollTop + el.clientHeight >= el.scrollHeight",
            arg=[await rows.element_handle(), 0],
        )
    assert sorted(seen) == list(range(1000))
    ids = list(seen.values())
    assert len(set(ids)) == 1000, "a job was listed twice"
    assert set(ids) == set(made)
    await expect(page.get_by_test_id("loaded")).to_have_text("1000 jobs loaded (all)")


async def test_filter_by_state_and_queue(
    page: Page, dashboard: DashboardServer, scheduler: SchedulerServer
) -> None:
    async with JobschedClient(scheduler.address) as client:
        q1 = await client.submit_many([{"type": "idle", "queue": "q1"}] * 3)
        await client.submit_many([{"type": "idle", "queue": "q2"}] * 2)
        await client.cancel(q1[0].id)
        await client.cancel((await client.submit_many([{"type": "idle", "queue": "q2"}]))[0].id)
    await page.goto(dashboard.url + "/jobs/")
    await page.get_by_label("State").select_option("CANCELLED")
    await page.get_by_label("Queue").fill("q1")
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(re.compile(r"state=CANCELLED&queue=q1"))
    await expect(page.get_by_test_id("loaded")).to_have_text("1 jobs loaded (all)")
    await expect(page.locator("li[data-job-id]")).to_have_count(1)
    assert await page.locator("li[data-job-id]").get_attribute("data-job-id") == q1[0].id
    # The URL alone restores the filters (a shared link).
    await page.goto(dashboard.url + "/jobs/?state=QUEUED&queue=q2")
    await expect(page.get_by_test_id("loaded")).to_have_text("2 jobs loaded (all)")
    await expect(page.get_by_label("Queue")).to_have_value("q2")
    # Rows follow their jobs live (WatchJobs through the SSE bridge), without a reload.
    await expect(page.get_by_test_id("loaded")).to_have_attribute("data-live", "yes")
    first = await page.locator("li[data-job-id]").first.get_attribute("data-job-id")
    assert first is not None
    async with JobschedClient(scheduler.address) as client:
        await client.cancel(first)
    await expect(page.locator(f"li[data-job-id='{first}'] .state")).to_have_text("CANCELLED")


async def test_filter_by_label(
    page: Page, dashboard: DashboardServer, scheduler: SchedulerServer
) -> None:
    async with JobschedClient(scheduler.address) as client:
        red = await client.submit_many([{"type": "idle", "labels": {"team": "red"}}] * 2)
        await client.submit_many([{"type": "idle", "labels": {"team": "blue"}}] * 3)
    await page.goto(dashboard.url + "/jobs/")
    await expect(page.get_by_test_id("loaded")).to_have_text("5 jobs loaded (all)")
    await page.get_by_label("Label").fill("team=red")
    await page.get_by_role("button", name="Apply").click()
    await expect(page).to_have_url(re.compile(r"label=team%3Dred"))
    await expect(page.get_by_test_id("loaded")).to_have_text("2 jobs loaded (all)")
    shown = await page.eval_on_selector_all(
        "li[data-job-id]", "els => els.map(e => e.dataset.jobId)"
    )
    assert sorted(shown) == sorted(j.id for j in red)
    # With the other filters, and from the URL alone.
    await page.goto(dashboard.url + "/jobs/?state=QUEUED&label=team%3Dblue")
    await expect(page.get_by_test_id("loaded")).to_have_text("3 jobs loaded (all)")
    await expect(page.get_by_label("Label")).to_have_value("team=blue")
    assert await serious_violations(page) == []


async def test_job_detail_draws_its_dependencies_and_downloads_artifacts(
    page: Page, dashboard: DashboardServer, scheduler: SchedulerServer
) -> None:
    async with AsyncClient(scheduler.address) as client:
        maker = await client.submit("artifacts")
        held = await client.submit("nobody-runs-this")
        await client.wait(maker.id, timeout=15)
        waiting = await client.submit("idle", depends_on=[maker.id, held.id])
    await page.goto(f"{dashboard.url}/jobs/detail/?id={waiting.id}")
    graph = page.get_by_test_id("dep-graph")
    await expect(graph.locator("a[data-job-id]")).to_have_count(2)
    await expect(graph.locator(f"a[data-job-id='{maker.id}']")).to_have_attribute(
        "data-state", "SUCCEEDED"
    )
    await expect(graph.locator(f"a[data-job-id='{held.id}']")).to_have_attribute(
        "data-state", "QUEUED"
    )
    assert await graph.locator(f"a[data-job-id='{maker.id}'] rect.node-SUCCEEDED").count() == 1
    assert await graph.locator(f"g[data-job-id='{waiting.id}']").count() == 1
    assert await serious_violations(page) == []
    await screenshot(page, "job-dependencies")
    # A node links to its job, whose artifacts download through the dashboard.
    await graph.locator(f"a[data-job-id='{maker.id}']").click()
    await expect(page).to_have_url(re.compile(f"id={maker.id}"))
    table = page.get_by_test_id("artifacts")
    for name in ARTIFACTS:
        await expect(table.get_by_role("link", name=name, exact=True)).to_be_visible()
    async with page.expect_download() as info:
        await table.get_by_role("link", name="out/data é.bin").click()
    download = await info.value
    assert download.suggested_filename == "data é.bin"
    saved = await download.path()
    assert saved.read_bytes() == ARTIFACTS["out/data é.bin"][0]
    assert await serious_violations(page) == []
    await screenshot(page, "job-artifacts")


async def test_pause_and_resume_a_queue(
    page: Page, dashboard: DashboardServer, scheduler: SchedulerServer
) -> None:
    async with JobschedClient(scheduler.address) as client:
        await client.submit("idle", queue="reports")
        await page.goto(dashboard.url + "/queues/")
        row = page.locator("tr[data-queue=reports]")
        await expect(row.get_by_test_id("queue-status")).to_have_text("active")
        await page.get_by_role("button", name="Pause queue reports").click()
        await expect(row.get_by_test_id("queue-status")).to_have_text("paused")
        assert (await client.get_queue("reports")).paused is True
        assert await serious_violations(page) == []
        await screenshot(page, "queues")
        await page.get_by_role("button", name="Resume queue reports").click()
        await expect(row.get_by_test_id("queue-status")).to_have_text("active")
        assert (await client.get_queue("reports")).paused is False
    await page.goto(dashboard.url + "/")
    await expect(page.get_by_role("heading", name="Active jobs")).to_be_visible()
    assert await serious_violations(page) == []
    await screenshot(page, "overview")


ADMIN = new_key()


@pytest.fixture
async def secured(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(db, auth="required", bootstrap_key=ADMIN) as server:
        yield server


async def test_a_viewer_key_sees_no_action_buttons(
    browser: Browser, secured: SchedulerServer
) -> None:
    async with JobschedClient(secured.address, token=ADMIN, timeout=10) as admin:
        _, secret = await admin.create_api_key("viewer", "viewer", ["default"])
        job = await admin.submit("idle", queue="reports")
    async with dashboard_for(secured.address) as dashboard:
        context = await browser.new_context()
        page = await context.new_page()
        try:
            await page.goto(dashboard.url + "/")
            await page.get_by_label("API key").fill(secret)
            assert await serious_violations(page) == []
            await screenshot(page, "sign-in")
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.get_by_role("heading", name="Active jobs")).to_be_visible()
            # The key is not readable by the page: the cookie is httpOnly and names a session.
            assert secret not in await page.evaluate("document.cookie")
            await page.get_by_role("link", name="Jobs", exact=True).click()
            await page.get_by_role("link", name=job.id).click()
            await expect(page.get_by_test_id("job-state")).to_have_text("QUEUED")
            await expect(page.get_by_role("group", name="Actions")).to_have_count(0)
            await expect(
                page.get_by_role("button", name=re.compile("Cancel|Retry|Delete"))
            ).to_have_count(0)
            await page.get_by_role("link", name="Queues").click()
            await expect(page.locator("tr[data-queue=reports]")).to_be_visible()
            await expect(page.get_by_role("button", name=re.compile("Pause|Resume"))).to_have_count(
                0
            )
            await page.get_by_role("link", name="Submit").click()
            await expect(page.get_by_text("This key may not submit jobs.")).to_be_visible()
        finally:
            await context.close()


async def test_schedules_dead_letters_and_executors_pages(
    page: Page, dashboard: DashboardServer, scheduler: SchedulerServer
) -> None:
    async with JobschedClient(scheduler.address) as client:
        await client.create_schedule("nightly", "0 3 * * *", {"type": "report"})
        doomed = [(await client.submit("doomed", queue="mail")).id for _ in range(2)]

        await page.goto(dashboard.url + "/schedules/")
        row = page.locator("tr[data-schedule=nightly]")
        await expect(row.get_by_test_id("schedule-status")).to_have_text("active")
        await page.get_by_role("button", name="Pause schedule nightly").click()
        await expect(row.get_by_test_id("schedule-status")).to_have_text("paused")
        assert (await client.get_schedule("nightly")).paused is True
        assert await serious_violations(page) == []
        await screenshot(page, "schedules")

        await page.goto(dashboard.url + "/dead-letters/")
        await expect(page.get_by_test_id("dead-count")).to_have_text("2 dead jobs", timeout=15_000)
        assert await serious_violations(page) == []
        await screenshot(page, "dead-letters")
        page.once("dialog", lambda dialog: dialog.accept())
        await page.get_by_role("button", name="Retry all shown").click()
        await expect(page.get_by_role("status")).to_have_text("Retried 2 jobs.")
        for job_id in doomed:
            _, events = await client.get(job_id, include_events=True)
            moves = [(e.from_state, e.to_state) for e in events]
            assert (job_pb2.JOB_STATE_DEAD, job_pb2.JOB_STATE_QUEUED) in moves

    await page.goto(dashboard.url + "/executors/")
    await expect(page.locator("tr[data-executor=dash-e]")).to_be_visible(timeout=15_000)
    assert await serious_violations(page) == []
    await screenshot(page, "executors")


async def test_overview_charts_submits_finishes_and_failure_rate_of_the_last_hour(
    page: Page, dashboard: DashboardServer, scheduler: SchedulerServer
) -> None:
    async with AsyncClient(scheduler.address) as client:
        ran = [await client.submit(kind) for kind in ("steps", "doomed", "doomed", "doomed")]
        await client.submit("nobody-runs-this")
        for job in ran:
            with contextlib.suppress(JobFailedError):
                await client.wait(job.id, timeout=15)
    await page.goto(dashboard.url + "/")
    await expect(page.get_by_test_id("submitted-total")).to_have_text("5")
    await expect(page.get_by_test_id("finished-total")).to_have_text("4")
    await expect(page.get_by_test_id("failure-rate-total")).to_have_text("75% (3 dead)")
    chart = page.get_by_test_id("submitted-chart")
    values = (await chart.get_attribute("data-values") or "").split(",")
    assert len(values) == 12
    assert values[-1] == "5"
    assert await chart.locator("path.spark-line").count() == 1
    rate = page.get_by_test_id("failure-rate-chart")
    assert ((await rate.get_attribute("data-values")) or "").endswith(",0.75")
    await expect(rate).to_have_attribute("aria-label", re.compile(r"over the last hour.*75%$"))
    assert await serious_violations(page) == []
    await screenshot(page, "overview-charts")
