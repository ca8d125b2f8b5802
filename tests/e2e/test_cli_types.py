"""The CLI's job-type commands against a real scheduler: `jobsched types set|show|ls|clear`
(--json on each), bad values (one argparse line, or the server's violation naming the field,
nothing written), and `jobsched status` saying where each of a job's settings came from."""

from __future__ import annotations

import json

from scheduler.server import SchedulerServer
from tests.cli import cli_ok as ok
from tests.cli import run_cli as run
from tests.e2e.test_cli_queues import row_of


async def test_set_show_ls_and_clear(scheduler: SchedulerServer) -> None:
    address = scheduler.address
    configured = json.loads(
        await ok(
            address,
            "types", "set", "Resize", "--timeout", "5m", "--max-attempts", "5",
            "--retry-initial-backoff", "10s", "--retry-jitter", "0", "--json",
        )
    )  # fmt: skip
    assert configured["name"] == "resize"
    assert configured["max_attempts"] == 5
    assert configured["timeout"] == "300s"
    assert configured["retry_policy"] == {"initial_backoff": "10s", "jitter": 0.0}
    # Another set changes only what it names.
    changed = json.loads(
        await ok(address, "types", "set", "resize", "--retry-multiplier", "3", "--json")
    )
    assert changed["max_attempts"] == 5
    assert changed["retry_policy"] == {
        "initial_backoff": "10s",
        "backoff_multiplier": 3.0,
        "jitter": 0.0,
    }

    shown = await ok(address, "types", "show", "resize")
    assert row_of(shown, "timeout") == "5m"
    assert row_of(shown, "max attempts") == "5"
    assert row_of(shown, "retry max backoff") == "inherit"
    assert json.loads(await ok(address, "types", "show", "resize", "--json")) == changed

    await ok(address, "types", "set", "encode", "--max-attempts", "2")
    listed = json.loads(await ok(address, "types", "ls", "--json"))
    assert [t["name"] for t in listed] == ["encode", "resize"]
    table = await ok(address, "types", "ls")
    assert "resize" in table
    assert "encode" in table
    assert "5m" in table

    cleared = json.loads(
        await ok(address, "types", "clear", "resize", "timeout", "retry-jitter", "--json")
    )
    assert "timeout" not in cleared
    assert cleared["retry_policy"] == {"initial_backoff": "10s", "backoff_multiplier": 3.0}
    assert cleared["max_attempts"] == 5
    everything = json.loads(await ok(address, "types", "clear", "encode", "--json"))
    assert everything == {"name": "encode"}
    assert [t["name"] for t in json.loads(await ok(address, "types", "ls", "--json"))] == ["resize"]
    never = await ok(address, "types", "show", "never-set")
    assert row_of(never, "max attempts") == "inherit"


async def test_bad_values_change_nothing(scheduler: SchedulerServer) -> None:
    address = scheduler.address
    before = await ok(address, "types", "set", "resize", "--max-attempts", "4", "--json")
    for args, field in (
        (("--max-attempts", "0"), "job_type.max_attempts"),
        (("--max-attempts", "101"), "job_type.max_attempts"),
        (("--timeout", "0"), "job_type.timeout"),
        (("--timeout", "8d"), "job_type.timeout"),
        (("--retry-jitter", "3"), "job_type.retry_policy.jitter"),
        (("--retry-multiplier", "0.5"), "job_type.retry_policy.backoff_multiplier"),
        (
            ("--retry-initial-backoff", "1m", "--retry-max-backoff", "1s"),
            "job_type.retry_policy.max_backoff",
        ),
    ):
        code, _, err = await run(address, "types", "set", "resize", "--max-attempts", "4", *args)
        assert code == 2, args
        assert field in err, (args, err)
    code, _, err = await run(address, "types", "set", "9lives", "--max-attempts", "2")
    assert code == 2
    assert "job_type.name" in err
    for args in (("--timeout", "soon"), ("--timeout", "inf"), ("--max-attempts", "many")):
        code, _, err = await run(address, "types", "set", "resize", *args)
        assert code == 2
        assert "usage:" in err
    code, _, err = await run(address, "types", "set", "resize")
    assert code == 2
    assert "nothing to change" in err
    code, _, err = await run(address, "types", "clear", "resize", "priority")
    assert code == 2
    assert "invalid choice" in err
    assert await ok(address, "types", "show", "resize", "--json") == before
    listed = json.loads(await ok(address, "types", "ls", "--json"))
    assert [t["name"] for t in listed] == ["resize"]


async def test_status_says_where_each_setting_came_from(scheduler: SchedulerServer) -> None:
    address = scheduler.address
    await ok(address, "queues", "set", "mail", "--max-attempts", "4", "--retry-jitter", "0.5")
    await ok(address, "types", "set", "send", "--timeout", "5m", "--retry-initial-backoff", "10s")
    job = json.loads(
        await ok(
            address,
            "submit", "--type", "send", "--queue", "mail", "--retry-multiplier", "3", "--json",
        )
    )  # fmt: skip
    shown = await ok(address, "status", job["id"])
    assert row_of(shown, "attempt") == "0 of 4 (queue)"
    assert row_of(shown, "timeout") == "5m (type)"
    assert row_of(shown, "retry") == (
        "initial 10s (type), x3 (job), max 10m (default), jitter 0.5 (queue)"
    )
    as_json = json.loads(await ok(address, "status", job["id"], "--json"))
    assert as_json["setting_origins"] == [
        {"setting": "max_attempts", "source": "SETTING_SOURCE_QUEUE"},
        {"setting": "timeout", "source": "SETTING_SOURCE_TYPE"},
        {"setting": "retry_policy.initial_backoff", "source": "SETTING_SOURCE_TYPE"},
        {"setting": "retry_policy.backoff_multiplier", "source": "SETTING_SOURCE_JOB"},
        {"setting": "retry_policy.max_backoff", "source": "SETTING_SOURCE_DEFAULT"},
        {"setting": "retry_policy.jitter", "source": "SETTING_SOURCE_QUEUE"},
    ]
    # The submit's own answer says it too.
    assert job["setting_origins"] == as_json["setting_origins"]
