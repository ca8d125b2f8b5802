"""The CLI's queue and priority commands against a real scheduler: `jobsched queues
ls|show|pause|resume|set-concurrency|set`, `jobsched priority`, and the submit options for the
retry policy and the timeout."""

from __future__ import annotations

import json

from scheduler.server import SchedulerServer
from tests.cli import cli_ok as ok
from tests.cli import run_cli as run


async def test_queue_commands(scheduler: SchedulerServer) -> None:
    address = scheduler.address
    await ok(address, "submit", "--type", "work", "--queue", "mail")
    paused = json.loads(await ok(address, "queues", "pause", "Mail", "--json"))
    assert paused["paused"] is True
    limited = json.loads(await ok(address, "queues", "set-concurrency", "mail", "4", "--json"))
    assert limited["max_concurrency"] == 4
    configured = json.loads(
        await ok(
            address,
            "queues", "set", "mail", "--max-attempts", "5", "--timeout", "2m",
            "--retry-initial-backoff", "10s", "--retry-jitter", "0", "--json",
        )
    )  # fmt: skip
    assert configured["default_max_attempts"] == 5
    assert configured["default_timeout"] == "120s"
    assert configured["default_retry_policy"] == {"initial_backoff": "10s", "jitter": 0.0}

    listed = json.loads(await ok(address, "queues", "ls", "--json"))
    [mail] = [q for q in listed if q["name"] == "mail"]
    assert mail["stats"]["jobs_by_state"] == {"JOB_STATE_QUEUED": "1"}
    assert mail["stats"]["waiting_by_reason"] == {"WAITING_REASON_QUEUE_PAUSED": "1"}
    table = await ok(address, "queues", "ls")
    assert "mail" in table
    assert "queue_paused 1" in table

    shown = await ok(address, "queues", "show", "mail")
    assert "max concurrency" in shown
    assert "10s" in shown
    unlimited = json.loads(await ok(address, "queues", "set-concurrency", "mail", "0", "--json"))
    assert "max_concurrency" not in unlimited
    resumed = json.loads(await ok(address, "queues", "resume", "mail", "--json"))
    assert resumed.get("paused", False) is False

    code, _, err = await run(address, "queues", "set", "mail")
    assert code == 2
    assert "nothing to change" in err
    code, _, err = await run(address, "queues", "set", "mail", "--retry-jitter", "3")
    assert code == 2
    assert "queue.default_retry_policy.jitter" in err


async def test_priority_and_submit_retry_options(scheduler: SchedulerServer) -> None:
    address = scheduler.address
    job = json.loads(
        await ok(
            address,
            "submit", "--type", "work", "--job-timeout", "30s", "--retry-initial-backoff",
            "500ms", "--retry-multiplier", "3", "--json",
        )
    )  # fmt: skip
    assert job["timeout"] == "30s"
    assert job["retry_policy"]["initial_backoff"] == "0.500s"
    assert job["retry_policy"]["backoff_multiplier"] == 3.0

    changed = json.loads(await ok(address, "priority", job["id"], "high", "--json"))
    assert changed["changed"] is True
    assert changed["job"]["priority"] == 75
    assert "(unchanged)" in await ok(address, "priority", job["id"], "75")
    code, _, _ = await run(address, "priority", job["id"], "101")
    assert code == 2
    code, _, _ = await run(address, "priority", "00000000-0000-4000-8000-000000000000", "10")
    assert code == 3
