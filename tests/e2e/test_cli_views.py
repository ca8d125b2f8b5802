"""The CLI's machine-readable and cluster views against a real scheduler and executor:
`watch --json` and `submit --watch --json` print one JSON object per line (no progress bar),
`delete --json`, and `jobsched cluster` (text and --json) naming the leader and executors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from executor.handlers import builtin_registry
from executor.runner import Executor
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.cli import cli_ok, run_cli
from tests.helpers import assert_eventually
from tests.scripted import serving


@pytest.fixture
async def server(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(db, presence_interval=0.2) as running:
        executor = Executor(
            [running.address], name="viewer", capacity=3, registry=builtin_registry()
        )
        await executor.start()
        try:
            await executor.wait_registered()
            yield running
        finally:
            await executor.stop(1.0)


def json_lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]  # every line is JSON, or this fails


def final_state(items: list[dict[str, Any]]) -> str:
    """The state the last item leaves the job in (a transition, or a snapshot of an ended job)."""
    last = items[-1]
    return str(last["event"]["to_state"] if "event" in last else last["snapshot"]["state"])


async def test_watch_and_submit_watch_print_json_lines(server: SchedulerServer) -> None:
    payload = json.dumps({"seconds": 0.3})
    out = await cli_ok(
        server.address, "submit", "--type", "sleep", "--payload", payload, "--watch", "--json"
    )
    items = json_lines(out)
    submitted, watched = items[0], items[1:]
    assert submitted["type"] == "sleep"
    assert "snapshot" in watched[0]
    assert any("progress" in item for item in watched)
    assert final_state(watched) == "JOB_STATE_SUCCEEDED"

    code, out, err = await run_cli(server.address, "watch", str(submitted["id"]), "--json")
    assert code == 0, err
    [snapshot] = json_lines(out)  # an ended job: its snapshot, then the stream ends
    assert snapshot["snapshot"]["state"] == "JOB_STATE_SUCCEEDED"

    failing = await cli_ok(
        server.address,
        "submit",
        "--type",
        "sleep",
        "--payload",
        '{"seconds": -1}',
        "--max-attempts",
        "1",
    )
    code, out, _ = await run_cli(server.address, "watch", failing.strip(), "--json")
    assert code == 6  # the job did not succeed
    assert final_state(json_lines(out)) == "JOB_STATE_DEAD"

    deleted = await cli_ok(server.address, "delete", failing.strip(), "--json")
    assert json.loads(deleted) == {"deleted": True, "id": failing.strip()}


async def test_cluster_shows_the_leader_and_the_executors(server: SchedulerServer) -> None:
    async def leading() -> dict[str, Any]:
        status: dict[str, Any] = json.loads(await cli_ok(server.address, "cluster", "--json"))
        assert status.get("leader_id") == server.replica_id
        [replica] = status["replicas"]
        assert replica.get("leader") is True
        assert [e["name"] for e in replica.get("executors", [])] == ["viewer"]
        return status

    status = await assert_eventually(leading, within=20)
    text = await cli_ok(server.address, "cluster")
    assert f"leader {server.replica_id}, epoch {status['epoch']}" in text
    row = next(line for line in text.splitlines() if "viewer" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:4] == ["viewer", server.replica_id, "0", "3"]
    assert cells[4] == "noop, sleep"
