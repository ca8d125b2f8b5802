"""Real-browser tests of the dashboard: Playwright's Python package driving Debian's Chromium
(/usr/bin/chromium; `make browser` installs it with apt-get, nothing downloads a browser build)
against the built front end (`make dashboard`, skipped by make when fresh), a real dashboard,
scheduler, PostgreSQL and executor.

The setup runs `make dashboard browser` itself, so `pytest tests/browser` works from a fresh
checkout; when the browser cannot be had the tests fail saying so, they never skip."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright

from dashboard.app import STATIC
from dashboard.serving import DashboardServer
from scheduler.server import SchedulerServer
from tests.dashboard.harness import dashboard_for, executing

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = REPO / "dashboard" / "web" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = REPO / "test-artifacts" / "browser"


@pytest.fixture(scope="session")
def built() -> None:
    """The front end's export and the browser (make does nothing when both are there)."""
    make = subprocess.run(
        ["make", "-s", "-C", str(REPO), "dashboard", "browser"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if make.returncode != 0:
        pytest.fail(
            "the browser tests need the built front end and Debian's chromium "
            f"(`make dashboard browser` failed):\n{make.stdout[-3000:]}\n{make.stderr[-3000:]}",
            pytrace=False,
        )
    if not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None:
        pytest.fail(f"no browser at {CHROMIUM}: run `make browser` (apt-get install chromium)")
    if not (STATIC / "index.html").is_file():
        pytest.fail(f"no front end in {STATIC}: run `make dashboard`", pytrace=False)
    if not AXE.is_file():
        pytest.fail(f"no axe-core at {AXE}: run `make dashboard` (npm ci)", pytrace=False)


@pytest.fixture(scope="session")
async def browser(built: None) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        try:
            chromium = await playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox"]
            )
        except Exception as exc:
            pytest.fail(f"Chromium at {CHROMIUM} did not start: {exc}", pytrace=False)
        yield chromium
        await chromium.close()


@pytest.fixture
async def dashboard(scheduler: SchedulerServer) -> AsyncIterator[DashboardServer]:
    async with executing(scheduler.address), dashboard_for(scheduler.address) as server:
        yield server


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    yield page
    await context.close()


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=False)
    return path


async def serious_violations(page: Page) -> list[str]:
    """axe-core's serious and critical findings on the page as it is."""
    await page.add_script_tag(path=str(AXE))
    found: list[str] = await page.evaluate(
        """async () => {
            const result = await axe.run(document);
            return result.violations
                .filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
        }"""
    )
    return found
