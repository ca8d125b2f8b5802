"""User handlers loaded by `python -m executor --handlers MODULE[:ATTR]` (also JOBSCHED_HANDLERS
and installed entry points), run by a real executor process against a real scheduler: async and
plain handlers, progress, logs and results; and every way a module can be wrong stops the
executor at start with one line naming the module and the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.faults.harness import Service, cluster_status
from tests.helpers import assert_eventually
from tests.scripted import serving

CHECKOUT = Path(__file__).resolve().parents[2]

PLUGIN = """
import jobsched


@jobsched.handler("plugin-echo")
def echo(ctx):
    return {"echo": ctx.json()}
"""


def environment(pythonpath: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSCHED_")}
    paths = [str(CHECKOUT)] + ([str(pythonpath)] if pythonpath else [])
    return {**env, "PYTHONPATH": os.pathsep.join(paths), **extra}


@pytest.fixture
async def scheduler(db: Database) -> AsyncIterator[SchedulerServer]:
    async with serving(db, heartbeat_interval=0.5) as server:
        yield server


async def start_executor(
    services: list[Service], tmp_path: Path, address: str, *argv: str, env: dict[str, str]
) -> Service:
    service = Service(
        name="executor",
        argv=["-m", "executor", "--scheduler", address, "--name", "users", "--grace", "1", *argv],
        log=tmp_path / "executor.log",
        environment=env,
    )
    services.append(service)
    await service.start()
    return service


async def advertised(address: str) -> list[str]:
    status = await cluster_status(address)
    executors = [e for replica in status.replicas for e in replica.executors]
    assert [e.name for e in executors] == ["users"]
    return sorted(executors[0].job_types)


async def finished(client: JobschedClient, job_id: str) -> job_pb2.Job:
    async def done() -> job_pb2.Job:
        job = await client.get(job_id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job
        return job

    return await assert_eventually(done, within=20)


@pytest.mark.timeout(90)
async def test_the_example_module_runs_async_and_plain_handlers(
    scheduler: SchedulerServer, services: list[Service], tmp_path: Path
) -> None:
    # The module is examples/handlers.py, as the README runs it: the examples cannot rot.
    await start_executor(
        services,
        tmp_path,
        scheduler.address,
        "--handlers",
        "examples.handlers",
        env=environment(),
    )

    async def registered() -> None:
        assert await advertised(scheduler.address) == [
            "checksum",
            "command",
            "noop",
            "resize",
            "sleep",
        ]

    await assert_eventually(registered, within=20)
    async with JobschedClient(scheduler.address, timeout=10) as client:
        resize = await client.submit("resize", payload={"width": 640, "height": 480})
        checksum = await client.submit("checksum", payload={"text": "hello"})
        percents = []
        async for item in client.watch(resize.id):
            if item.HasField("progress"):
                percents.append(item.progress.percent)
        job = await finished(client, resize.id)
        assert json.loads(job.result) == {"width": 320, "height": 240}
        assert percents[-1:] == [100.0]
        assert [line.line async for line in client.logs(resize.id)] == ["resized 640x480 by 0.5"]
        job = await finished(client, checksum.id)
        assert json.loads(job.result)["sha256"] == (
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        )
        # A handler's own refusal: NonRetryableError ends the job DEAD at once.
        bad = await client.submit("resize", payload={"width": 1}, max_attempts=3)

        async def dead() -> None:
            job = await client.get(bad.id)
            assert job.state == job_pb2.JOB_STATE_DEAD
            assert job.attempt == 1
            assert "payload needs width and height" in job.last_error

        await assert_eventually(dead, within=20)


def write_module(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def write_distribution(directory: Path, module: str, entry: str) -> None:
    """An installed distribution as importlib.metadata finds one on sys.path."""
    info = directory / "jobsched_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jobsched-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[jobsched.handlers]\necho = {module}:{entry}\n")


@pytest.mark.timeout(90)
async def test_handlers_from_the_environment_and_from_an_entry_point(
    scheduler: SchedulerServer, services: list[Service], tmp_path: Path
) -> None:
    plugins = tmp_path / "site"
    plugins.mkdir()
    write_module(plugins, "echo_plugin", PLUGIN)
    write_distribution(plugins, "echo_plugin", "echo")
    write_module(
        plugins,
        "registry_module",
        """
        from executor.handlers import HandlerRegistry

        jobs = HandlerRegistry()

        @jobs.handler("double")
        async def double(ctx):
            return {"value": 2 * ctx.json()["value"]}
        """,
    )
    env = environment(plugins, JOBSCHED_HANDLERS="registry_module:jobs")
    await start_executor(services, tmp_path, scheduler.address, env=env)

    async def registered() -> None:
        types = await advertised(scheduler.address)
        assert types == ["command", "double", "noop", "plugin-echo", "sleep"]

    await assert_eventually(registered, within=20)
    async with JobschedClient(scheduler.address, timeout=10) as client:
        double = await client.submit("double", payload={"value": 21})
        echo = await client.submit("plugin-echo", payload={"items": [1, 2]})
        assert json.loads((await finished(client, double.id)).result) == {"value": 42}
        assert json.loads((await finished(client, echo.id)).result) == {"echo": {"items": [1, 2]}}


BROKEN = {
    "does_not_import": "import no_such_dependency_here\n",
    "raises_on_import": "raise RuntimeError('config missing')\n",
    "no_handlers": "x = 1\n",
    "bad_signature": """
        import jobsched

        @jobsched.handler("two-args")
        def two(ctx, extra):
            return None
        """,
    "duplicate_a": """
        import jobsched

        @jobsched.handler("resize")
        def a(ctx):
            return None
        """,
    "duplicate_b": """
        import jobsched

        @jobsched.handler("RESIZE")
        async def b(ctx):
            return None
        """,
    "clash_builtin": """
        import jobsched

        @jobsched.handler
        def sleep(ctx):
            return None
        """,
    "not_a_handler": "value = 42\n",
}


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (
            ["does_not_import"],
            "cannot import handler module 'does_not_import': ModuleNotFoundError: "
            "No module named 'no_such_dependency_here'",
        ),
        (
            ["raises_on_import"],
            "cannot import handler module 'raises_on_import': RuntimeError: config missing",
        ),
        (["no_handlers"], "handler module 'no_handlers' defines no handlers"),
        (["bad_signature"], "must take exactly one positional argument"),
        (
            ["duplicate_a", "duplicate_b"],
            "job type 'resize' is defined twice: by duplicate_a:a and by duplicate_b:b",
        ),
        (["clash_builtin"], "job type 'sleep' is defined twice: by built-in and by"),
        (["not_a_handler:value"], "not_a_handler:value is neither a handler nor a"),
        (["not_a_handler:missing"], "handler module 'not_a_handler' has no attribute 'missing'"),
        (["not/a/module"], "expected MODULE or MODULE:ATTR"),
    ],
)
def test_a_bad_handler_module_stops_the_executor_with_one_line(
    tmp_path: Path, specs: list[str], expected: str
) -> None:
    for name, source in BROKEN.items():
        write_module(tmp_path, name, source)
    argv = [arg for spec in specs for arg in ("--handlers", spec)]
    result = subprocess.run(
        [sys.executable, "-m", "executor", "--scheduler", "127.0.0.1:1", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,  # the current directory is importable
        env=environment(),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("jobsched executor: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr
