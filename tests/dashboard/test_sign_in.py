"""Sign-in against a scheduler running --auth required: the key stays server-side, the session
knows what the key may do, and the scheduler (not the dashboard) refuses what it may not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dashboard.serving import DashboardServer
from jobsched.client import JobschedClient
from scheduler.domain.auth import new_key
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.dashboard.harness import ARTIFACTS, Viewer, dashboard_for, executing
from tests.helpers import assert_eventually
from tests.scripted import serving

ADMIN = new_key()


@pytest.fixture
async def secured(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(db, auth="required", bootstrap_key=ADMIN) as server:
        yield server


@pytest.fixture
async def dashboard(secured: SchedulerServer) -> AsyncIterator[DashboardServer]:
    async with dashboard_for(secured.address) as server:
        yield server


async def key(server: SchedulerServer, role: str) -> str:
    async with JobschedClient(server.address, token=ADMIN, timeout=10) as admin:
        _, secret = await admin.create_api_key(f"{role} key", role, ["default"])
    return secret


async def test_signing_in_with_keys_of_each_role(
    dashboard: DashboardServer, secured: SchedulerServer
) -> None:
    viewer = Viewer(dashboard.url)
    try:
        session = await viewer.open()
        assert session["auth_required"] is True
        assert session["signed_in"] is False
        refused = await viewer.get("/api/jobs")
        assert refused.status_code == 401
        assert refused.json()["error"]["reason"] == "CREDENTIAL_MISSING"

        wrong = await viewer.sign_in("jsk_not_a_key")
        assert wrong.status_code == 401
        assert (await viewer.get("/api/jobs")).status_code == 401

        reader = await viewer.sign_in(await key(secured, "viewer"))
        assert reader.status_code == 200, reader.text
        body = reader.json()
        assert body["signed_in"] is True
        assert body["permissions"] == ["jobs.read"]
        # The key never comes back to the browser.
        assert "jsk_" not in reader.text
        assert "jsk_" not in reader.headers.get("set-cookie", "")
        assert (await viewer.get("/api/jobs")).status_code == 200
        denied = await viewer.post("/api/jobs", {"type": "x"})
        assert denied.status_code == 403
        assert denied.json()["error"]["reason"] == "PERMISSION_MISSING"

        operator = await viewer.sign_in(await key(secured, "operator"))
        permissions = set(operator.json()["permissions"])
        assert {"jobs.submit", "jobs.operate", "queues.manage"} <= permissions
        assert "cluster.read" not in permissions
        made = await viewer.post("/api/jobs", {"type": "x"})
        assert made.status_code == 201
        assert (await viewer.get("/api/overview")).json()["cluster"] is None

        assert (await viewer.delete("/api/session")).status_code == 204
        await viewer.open()
        assert (await viewer.get("/api/jobs")).status_code == 401
    finally:
        await viewer.close()


async def test_a_key_of_two_tenants_picks_one_and_switches(
    dashboard: DashboardServer, secured: SchedulerServer
) -> None:
    async with JobschedClient(secured.address, token=ADMIN, timeout=10) as admin:
        _, secret = await admin.create_api_key("both", "operator", ["acme", "globex"])
    viewer = Viewer(dashboard.url)
    try:
        await viewer.open()
        # No tenant chosen: the scheduler says so, and the sign-in fails with its reason.
        undecided = await viewer.sign_in(secret)
        assert undecided.status_code == 403
        assert undecided.json()["error"]["reason"] == "TENANT_NOT_SELECTED"
        assert (await viewer.sign_in(secret, "acme")).status_code == 200
        made = (await viewer.post("/api/jobs", {"type": "x"})).json()["job"]["id"]
        switched = await viewer.post("/api/session/tenant", {"tenant": "globex"})
        assert switched.status_code == 200
        assert switched.json()["tenant"] == "globex"
        assert (await viewer.get("/api/jobs")).json()["jobs"] == []
        assert (await viewer.get(f"/api/jobs/{made}")).status_code == 404
        refused = await viewer.post("/api/session/tenant", {"tenant": "initech"})
        assert refused.status_code == 403
        assert refused.json()["error"]["reason"] == "TENANT_NOT_ALLOWED"
        # Still globex: a refused switch changes nothing.
        assert (await viewer.get("/api/session")).json()["tenant"] == "globex"
        assert (await viewer.post("/api/session/tenant", {"tenant": "acme"})).status_code == 200
        assert [j["id"] for j in (await viewer.get("/api/jobs")).json()["jobs"]] == [made]
    finally:
        await viewer.close()


async def test_artifacts_download_with_the_signed_in_key_and_its_tenant(
    dashboard: DashboardServer, secured: SchedulerServer
) -> None:
    async with JobschedClient(secured.address, token=ADMIN, timeout=10) as admin:
        job = await admin.submit("artifacts")
        _, other = await admin.create_api_key("elsewhere", "viewer", ["other"])
    async with executing(secured.address, token=await key(secured, "executor")):
        viewer = Viewer(dashboard.url)
        try:
            await viewer.open()
            await viewer.sign_in(await key(secured, "viewer"))

            async def stored() -> None:
                listed = await viewer.get(f"/api/jobs/{job.id}/artifacts")
                assert len(listed.json()["artifacts"]) == len(ARTIFACTS)

            await assert_eventually(stored, within=15)
        finally:
            await viewer.close()
    path = f"/api/jobs/{job.id}/artifacts/report.json"
    anonymous = Viewer(dashboard.url)
    try:
        await anonymous.open()
        refused = await anonymous.get(path)
        assert refused.status_code == 401
        assert refused.json()["error"]["reason"] == "CREDENTIAL_MISSING"
        await anonymous.sign_in(await key(secured, "viewer"))
        got = await anonymous.get(path)
        assert got.status_code == 200
        assert got.content == ARTIFACTS["report.json"][0]
        # A key of another tenant does not see the job, nor its artifacts.
        await anonymous.sign_in(other, tenant="other")
        assert (await anonymous.get(path)).status_code == 404
        assert (await anonymous.get(f"/api/jobs/{job.id}/artifacts")).status_code == 404
    finally:
        await anonymous.close()
