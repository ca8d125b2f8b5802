"""ScheduleService over real gRPC and PostgreSQL: every RPC, bad input naming the field and
writing nothing, tenant isolation, TriggerSchedule, real firing by the leader's cron loop (with
a clock moved to just before each minute, since cron has minute resolution), and the
`jobsched schedules` commands."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient, job_spec
from jobsched.errors import ConflictError, InvalidArgumentError, NotFoundError
from jobsched.v1 import job_pb2, schedule_service_pb2
from scheduler.server import SchedulerServer, ServerSettings
from scheduler.store.database import Database
from tests.cli import cli_ok, run_cli
from tests.helpers import assert_eventually

BERLIN = ZoneInfo("Europe/Berlin")


class OffsetClock:
    """Real time moved by `offset`: time flows, and a test can jump it ahead."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def jump_to(self, at: datetime) -> None:
        self.offset += at - self()


@pytest.fixture
async def clock() -> OffsetClock:
    return OffsetClock()


@pytest.fixture
async def server(db: Database, clock: OffsetClock) -> AsyncIterator[SchedulerServer]:
    settings = ServerSettings(
        listen="127.0.0.1:0", shutdown_grace=1.0, leader_tick=0.1, leader_renew_timeout=1.0
    )
    scheduler = SchedulerServer(db, settings, clock)
    await scheduler.start()

    async def leads() -> None:
        assert scheduler.leader.is_leader

    await assert_eventually(leads)
    yield scheduler
    await scheduler.stop()


@pytest.fixture
async def client(server: SchedulerServer) -> AsyncIterator[JobschedClient]:
    async with JobschedClient(server.address, tenant="acme", timeout=10) as c:
        yield c


@pytest.fixture
async def worker(server: SchedulerServer) -> AsyncIterator[Executor]:
    executor = Executor([server.address], name="w", capacity=4, registry=builtin_registry())
    await executor.start()
    yield executor
    await executor.stop(1.0)


def at(ts: object) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


# --- the RPCs ----------------------------------------------------------------------------------


async def test_create_get_list_pause_resume_delete(
    client: JobschedClient, clock: OffsetClock
) -> None:
    clock.jump_to(datetime(2026, 3, 27, 12, tzinfo=UTC))
    created = await client.create_schedule(
        "Nightly",
        " 30  2 * * * ",
        job_spec("report", queue="Reports", payload={"x": 1}, idempotency_key="ignored"),
        time_zone="europe/berlin",
        overlap="cancel-previous",
        catchup="latest",
        catchup_window=timedelta(hours=6),
    )
    assert created.name == "nightly"
    assert created.cron == "30 2 * * *"
    assert created.time_zone == "Europe/Berlin"
    assert created.job_template.queue == "reports"
    assert created.job_template.payload == b'{"x":1}'
    assert created.job_template.idempotency_key == ""  # each fire gets its own
    assert created.overlap_policy == schedule_service_pb2.OVERLAP_POLICY_CANCEL_PREVIOUS
    assert created.catchup_policy == schedule_service_pb2.CATCHUP_POLICY_LATEST
    assert created.catchup_window.ToTimedelta() == timedelta(hours=6)
    assert [at(t) for t in created.next_fire_times] == [datetime(2026, 3, 28, 1, 30, tzinfo=UTC)]
    assert not created.HasField("last_fire_time")

    # GetSchedule by name or id: the next 5 fire times, across the spring-forward day.
    for ref in ("nightly", created.id, created.id.upper()):
        got = await client.get_schedule(ref)
        assert [at(t) for t in got.next_fire_times] == [
            datetime(2026, 3, 28, 1, 30, tzinfo=UTC),  # 02:30 CET
            datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST: 02:30 does not exist
            datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
            datetime(2026, 3, 31, 0, 30, tzinfo=UTC),
            datetime(2026, 4, 1, 0, 30, tzinfo=UTC),
        ]

    with pytest.raises(ConflictError) as taken:
        await client.create_schedule("NIGHTLY", "* * * * *", {"type": "x"})
    assert taken.value.code.name == "ALREADY_EXISTS"
    assert taken.value.reason == "SCHEDULE_ALREADY_EXISTS"

    for name in ("c1", "a1", "b1", "d1"):
        await client.create_schedule(name, "0 * * * *", {"type": "x"})
    page, token = await client.list_schedules_page(page_size=2)
    assert [s.name for s in page] == ["a1", "b1"]
    assert len(page[0].next_fire_times) == 1
    page, token = await client.list_schedules_page(page_size=2, page_token=token)
    assert [s.name for s in page] == ["c1", "d1"]
    page, token = await client.list_schedules_page(page_size=2, page_token=token)
    assert ([s.name for s in page], token) == (["nightly"], "")
    assert [s.name async for s in client.list_schedules(page_size=1)] == [
        "a1",
        "b1",
        "c1",
        "d1",
        "nightly",
    ]

    paused = await client.pause_schedule("nightly")
    assert paused.paused
    assert list(paused.next_fire_times) == []
    assert (await client.pause_schedule(created.id)).paused  # idempotent
    clock.jump_to(datetime(2026, 4, 2, 12, tzinfo=UTC))
    resumed = await client.resume_schedule("nightly")
    assert not resumed.paused
    assert [at(t) for t in resumed.next_fire_times] == [datetime(2026, 4, 3, 0, 30, tzinfo=UTC)]
    assert (await client.resume_schedule("nightly")).next_fire_times == resumed.next_fire_times

    await client.delete_schedule("nightly")
    with pytest.raises(NotFoundError) as missing:
        await client.get_schedule("nightly")
    assert missing.value.reason == "SCHEDULE_NOT_FOUND"
    for call in (
        client.pause_schedule,
        client.resume_schedule,
        client.delete_schedule,
        client.trigger_schedule,
    ):
        with pytest.raises(NotFoundError):
            await call(created.id)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"name": ""}, "schedule.name"),
        ({"name": "9lives"}, "schedule.name"),
        ({"name": "0f8fad5b-d9cb-469f-a165-70867728950e"}, "schedule.name"),
        ({"cron": ""}, "schedule.cron"),
        ({"cron": "61 * * * *"}, "schedule.cron"),
        ({"cron": "* * * * * *"}, "schedule.cron"),
        ({"cron": "@daily"}, "schedule.cron"),
        ({"cron": "0 0 31 2 *"}, "schedule.cron"),
        ({"time_zone": "Mars/Olympus_Mons"}, "schedule.time_zone"),
        ({"time_zone": "localtime"}, "schedule.time_zone"),
        ({"job_template": job_pb2.JobSpec()}, "schedule.job_template.type"),
        ({"job_template": job_pb2.JobSpec(type="bad type")}, "schedule.job_template.type"),
        ({"job_template": job_pb2.JobSpec(type="t", queue="q q")}, "schedule.job_template.queue"),
        (
            {"job_template": job_pb2.JobSpec(type="t", priority=101)},
            "schedule.job_template.priority",
        ),
        (
            {"job_template": job_pb2.JobSpec(type="t", depends_on=["x"])},
            "schedule.job_template.depends_on",
        ),
        ({"overlap_policy": 9}, "schedule.overlap_policy"),
        ({"catchup_policy": 9}, "schedule.catchup_policy"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    server: SchedulerServer, client: JobschedClient, fields: dict[str, object], path: str
) -> None:
    message = schedule_service_pb2.Schedule(
        name="ok", cron="* * * * *", job_template=job_pb2.JobSpec(type="t")
    )
    for key, value in fields.items():
        if isinstance(value, job_pb2.JobSpec):
            message.job_template.CopyFrom(value)
        else:
            setattr(message, key, value)
    request = schedule_service_pb2.CreateScheduleRequest(schedule=message)
    with pytest.raises(InvalidArgumentError) as raised:
        # Through the client's own call path: some of these values its helpers would refuse.
        await client._call_schedules(lambda stub: stub.CreateSchedule, request)
    assert path in [field for field, _ in raised.value.field_violations]
    assert [s async for s in client.list_schedules()] == []


async def test_more_bad_input(client: JobschedClient) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.create_schedule("ok", "nope", {"type": ""}, time_zone="Nowhere")
    assert [f for f, _ in raised.value.field_violations] == [
        "schedule.cron",
        "schedule.time_zone",
        "schedule.job_template.type",
    ]
    with pytest.raises(InvalidArgumentError) as raised:
        await client.create_schedule(
            "ok", "* * * * *", {"type": "t"}, catchup_window=timedelta(days=400)
        )
    assert [f for f, _ in raised.value.field_violations] == ["schedule.catchup_window"]
    for bad in ("", "not a name"):
        with pytest.raises(InvalidArgumentError) as raised:
            await client.get_schedule(bad)
        assert [f for f, _ in raised.value.field_violations] == ["id"]
    with pytest.raises(InvalidArgumentError) as raised:
        await client.list_schedules_page(page_size=-1)
    assert [f for f, _ in raised.value.field_violations] == ["page_size"]
    with pytest.raises(InvalidArgumentError) as raised:
        await client.list_schedules_page(page_token="garbage")
    assert [f for f, _ in raised.value.field_violations] == ["page_token"]
    assert [s async for s in client.list_schedules()] == []


async def test_tenants_see_only_their_schedules(
    server: SchedulerServer, client: JobschedClient
) -> None:
    mine = await client.create_schedule("shared-name", "* * * * *", {"type": "t"})
    async with JobschedClient(server.address, tenant="globex", timeout=10) as other:
        assert [s async for s in other.list_schedules()] == []
        for call in (
            other.get_schedule,
            other.pause_schedule,
            other.resume_schedule,
            other.trigger_schedule,
            other.delete_schedule,
        ):
            for ref in (mine.id, "shared-name"):
                with pytest.raises(NotFoundError):
                    await call(ref)
        theirs = await other.create_schedule("shared-name", "0 * * * *", {"type": "t"})
        assert theirs.id != mine.id
        page, _ = await other.list_schedules_page()
        assert [s.id for s in page] == [theirs.id]
        # A token of another tenant's listing is refused.
        await client.create_schedule("zz", "* * * * *", {"type": "t"})
        _, token = await client.list_schedules_page(page_size=1)
        with pytest.raises(InvalidArgumentError):
            await other.list_schedules_page(page_token=token)
    assert (await client.get_schedule("shared-name")).cron == "* * * * *"


# --- firing ------------------------------------------------------------------------------------


async def test_trigger_submits_now_and_the_job_runs(
    server: SchedulerServer, client: JobschedClient, worker: Executor
) -> None:
    schedule = await client.create_schedule(
        "on-demand", "0 0 1 1 *", {"type": "noop", "payload": {"n": 1}}, overlap="skip"
    )
    job, skipped = await client.trigger_schedule("on-demand")
    assert not skipped
    assert job is not None
    assert job.type == "noop"
    assert job.payload == b'{"n":1}'
    assert job.idempotency_key.startswith(f"schedule:{schedule.id}:")

    async def succeeded() -> None:
        assert (await client.get(job.id)).state == job_pb2.JOB_STATE_SUCCEEDED

    await assert_eventually(succeeded)
    after = await client.get_schedule("on-demand")
    assert after.last_job_id == job.id
    assert after.next_fire_times[0] == schedule.next_fire_times[0]  # outside the cron rhythm

    # SKIP: a trigger while the previous run is active is skipped.
    await worker.stop(1.0)
    first, _ = await client.trigger_schedule(schedule.id)
    assert first is not None
    second, skipped = await client.trigger_schedule(schedule.id)
    assert (second, skipped) == (None, True)
    assert (await client.get(first.id)).state == job_pb2.JOB_STATE_QUEUED


async def test_trigger_with_cancel_previous_cancels_the_active_run(
    client: JobschedClient,
) -> None:
    await client.create_schedule("replace", "0 0 1 1 *", {"type": "t"}, overlap="cancel-previous")
    first, _ = await client.trigger_schedule("replace")
    second, skipped = await client.trigger_schedule("replace")
    assert first is not None
    assert second is not None
    assert not skipped
    assert (await client.get(first.id)).state == job_pb2.JOB_STATE_CANCELLED
    assert (await client.get(second.id)).state == job_pb2.JOB_STATE_QUEUED


async def test_the_leader_fires_a_schedule_every_minute_on_time(
    server: SchedulerServer, client: JobschedClient, clock: OffsetClock, worker: Executor
) -> None:
    """Cron has minute resolution: the clock jumps to just before each next fire, and the
    leader's loop (sleeping until the earliest next fire) fires it; an executor runs the job."""
    schedule = await client.create_schedule("tick", "* * * * *", {"type": "noop"})
    fired: list[datetime] = []
    for _ in range(3):
        due = at((await client.get_schedule("tick")).next_fire_times[0])
        clock.jump_to(due - timedelta(milliseconds=300))
        server.cron.wake()

        async def ran(due: datetime = due) -> str:
            current = await client.get_schedule("tick")
            assert current.HasField("last_fire_time")
            assert at(current.last_fire_time) == due
            job = await client.get(current.last_job_id)
            assert job.state == job_pb2.JOB_STATE_SUCCEEDED
            return job.idempotency_key

        key = await assert_eventually(ran, within=5)
        assert key == f"schedule:{schedule.id}:{due.isoformat()}"
        fired.append(due)
        # It fired on time: not before `due` (by the scheduler's clock), and promptly.
        assert clock() - due < timedelta(seconds=3)
    assert [b - a for a, b in itertools.pairwise(fired)] == [timedelta(minutes=1)] * 2
    history = [j async for j in client.history(type="noop")]
    assert len(history) == 3
    assert server.cron.fired_total == 3


async def test_a_schedule_created_on_a_follower_is_fired_by_the_leader_on_time(
    server: SchedulerServer, db: Database, clock: OffsetClock, worker: Executor
) -> None:
    """The leader's cron loop sleeps up to 30 s while nothing is due; a schedule created on
    another replica wakes it through the jobsched_schedules notification."""
    settings = ServerSettings(
        listen="127.0.0.1:0", shutdown_grace=1.0, leader_tick=0.1, leader_renew_timeout=1.0
    )
    follower = SchedulerServer(db, settings, clock)
    await follower.start()
    try:
        assert not follower.leader.is_leader
        assert server.notifier is not None
        assert follower.notifier is not None
        await server.notifier.connected.wait()
        await follower.notifier.connected.wait()
        now = clock()
        minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        clock.jump_to(minute - timedelta(milliseconds=700))
        async with JobschedClient(follower.address, tenant="acme", timeout=10) as c:
            schedule = await c.create_schedule("remote", "* * * * *", {"type": "noop"})
            assert at(schedule.next_fire_times[0]) == minute

            async def ran() -> None:
                current = await c.get_schedule("remote")
                assert current.last_job_id
                assert (await c.get(current.last_job_id)).state == job_pb2.JOB_STATE_SUCCEEDED

            await assert_eventually(ran, within=5)
        assert server.cron.fired_total == 1
        assert follower.cron.fired_total == 0
    finally:
        await follower.stop()


# --- the CLI -----------------------------------------------------------------------------------


async def run(address: str, *args: str) -> tuple[int, str, str]:
    return await run_cli(address, "--tenant", "acme", *args)


async def ok(address: str, *args: str) -> str:
    return await cli_ok(address, "--tenant", "acme", *args)


async def test_schedule_commands(server: SchedulerServer) -> None:
    address = server.address
    created = json.loads(
        await ok(
            address,
            "schedules", "create", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Berlin",
            "--type", "report", "--queue", "reports", "--payload", '{"full": true}',
            "--overlap", "skip", "--catchup", "all", "--catchup-window", "6h", "--json",
        )
    )  # fmt: skip
    assert created["name"] == "nightly"
    assert created["time_zone"] == "Europe/Berlin"
    assert created["overlap_policy"] == "OVERLAP_POLICY_SKIP"
    assert created["catchup_policy"] == "CATCHUP_POLICY_ALL"
    assert created["catchup_window"] == "21600s"
    assert created["job_template"]["type"] == "report"
    first_fire = datetime.fromisoformat(created["next_fire_times"][0])
    assert first_fire.astimezone(BERLIN).strftime("%H:%M") in ("02:30", "03:00")

    shown = await ok(address, "schedules", "show", "nightly")
    assert "30 2 * * *  (Europe/Berlin)" in shown
    assert "skip" in shown
    assert "all (within 6h)" in shown
    listed = json.loads(await ok(address, "schedules", "ls", "--json"))
    assert [s["name"] for s in listed] == ["nightly"]
    table = await ok(address, "schedules", "ls")
    assert "nightly" in table
    assert "Europe/Berlin" in table

    paused = json.loads(await ok(address, "schedules", "pause", "nightly", "--json"))
    assert paused["paused"] is True
    resumed = await ok(address, "schedules", "resume", "nightly")
    assert "paused      no" in resumed

    job_id = (await ok(address, "schedules", "trigger", "nightly")).strip()
    status = json.loads(await ok(address, "status", job_id, "--json"))
    assert status["type"] == "report"
    assert "skipped" in await ok(address, "schedules", "trigger", "nightly")
    triggered = json.loads(await ok(address, "schedules", "trigger", created["id"], "--json"))
    assert triggered == {"job": None, "skipped": True}

    code, _, err = await run(
        address, "schedules", "create", "broken", "--cron", "99 * * * *", "--tz", "Nowhere",
        "--type", "t",
    )  # fmt: skip
    assert code == 2
    assert "schedule.cron" in err
    assert "schedule.time_zone" in err
    code, _, err = await run(
        address, "schedules", "create", "nightly", "--cron", "* * * * *", "--type", "t"
    )
    assert code == 4
    assert "already exists" in err
    code, _, _ = await run(
        address, "schedules", "create", "x", "--cron", "* * * * *", "--type", "t",
        "--overlap", "sometimes",
    )  # fmt: skip
    assert code == 2

    assert "nightly deleted" in await ok(address, "schedules", "delete", "nightly")
    code, _, err = await run(address, "schedules", "show", "nightly")
    assert code == 3
    assert "not found" in err
    assert json.loads(await ok(address, "schedules", "ls", "--json")) == []
