"""The CLI's queue and priority commands against a real scheduler: `jobsched queues
ls|show|pause|resume|set-concurrency|set`, `jobsched priority`, and the submit options for the
retry policy and the timeout."""

from __future__ import annotations

import json
import re

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


def row_of(shown: str, label: str) -> str:
    """The value of a `queues show` row."""
    lines = shown.splitlines()
    [value] = [line[len(label) :].strip() for line in lines if line.startswith(f"{label} ")]
    return value


async def test_queue_retention_commands(scheduler: SchedulerServer) -> None:
    address = scheduler.address
    await ok(address, "submit", "--type", "work", "--queue", "mail")
    assert row_of(await ok(address, "queues", "show", "mail"), "retention") == "global default"

    week = json.loads(await ok(address, "queues", "set", "Mail", "--retention", "7d", "--json"))
    assert week["retention"] == "604800s"
    assert row_of(await ok(address, "queues", "show", "mail"), "retention") == "7d"
    [listed] = json.loads(await ok(address, "queues", "ls", "--json"))
    assert listed["retention"] == "604800s"
    table = (await ok(address, "queues", "ls")).splitlines()
    [header] = [re.split("[┃│]", line) for line in table if "retention" in line]
    [row] = [re.split("[┃│]", line) for line in table if "mail" in line]
    assert row[[c.strip() for c in header].index("retention")].strip() == "7d"

    forever = json.loads(
        await ok(address, "queues", "set", "mail", "--retention", "forever", "--json")
    )
    assert forever["retention"] == "0s"
    zero = await ok(address, "queues", "set", "mail", "--retention", "0")
    assert row_of(zero, "retention") == "forever"
    # Another option leaves the retention alone; `default` clears it.
    await ok(address, "queues", "set", "mail", "--max-attempts", "4")
    assert row_of(await ok(address, "queues", "show", "mail"), "retention") == "forever"
    cleared = json.loads(
        await ok(address, "queues", "set", "mail", "--retention", "default", "--json")
    )
    assert "retention" not in cleared
    assert cleared["default_max_attempts"] == 4

    for bad in ("-1d", "soon", "inf", "nan"):
        code, _, err = await run(address, "queues", "set", "mail", "--retention", bad)
        assert code == 2, bad
        assert "--retention" in err
        assert "Traceback" not in err
    code, _, err = await run(address, "queues", "set", "mail", "--retention", "36501d")
    assert code == 2
    assert "queue.retention" in err
    assert "retention" not in json.loads(await ok(address, "queues", "show", "mail", "--json"))
