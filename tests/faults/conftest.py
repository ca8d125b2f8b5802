"""The fault tests' shared fixture: the processes of one test (tests/faults/harness.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.faults.harness import Cluster


@pytest.fixture
async def cluster(database_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """Schedulers and executors as subprocesses on the test's database, all stopped at the
    end; their log tails are printed (pytest shows them when the test failed)."""
    running = Cluster(database_url, tmp_path)
    try:
        yield running
    finally:
        await running.close()
        print(running.logs())
