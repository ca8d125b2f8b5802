"""The built-in `command` job type end to end: a real scheduler, an executor whose command handler
is configured as `python -m executor` would configure it, and real processes (sh, sleep, cat).

Output capture and its cap, the progress protocol, exit codes (retryable and not), the payload's
and the job's timeout and a cancel killing the whole process tree (checked by pid), refusal
without --allow-command or with a glob that does not match, the environment and the working
directory (and its removal), resource limits, payload validation at submit. The command line's
wiring is checked through a real executor process."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from executor.command import CommandHandler
from executor.command_options import command_settings
from executor.flags import parse_args
from executor.handlers import builtin_registry
from executor.runner import Executor
from jobsched.client import JobschedClient, job_spec
from jobsched.errors import InvalidArgumentError
from jobsched.v1 import job_pb2
from scheduler.server import SchedulerServer
from scheduler.store.database import Database
from tests.e2e.test_user_handlers import environment, start_executor
from tests.faults.harness import Service
from tests.helpers import assert_eventually, run_example

S = job_pb2.JobState
SH = shutil.which("sh")
assert SH is not None
SH_GLOB = os.path.dirname(os.path.realpath(SH)) + "/*"
FAST_RETRY = {"initial_backoff": timedelta(milliseconds=50), "jitter": 0.0}

Start = Callable[..., Awaitable[Executor]]


@pytest.fixture
async def client(scheduler: SchedulerServer) -> AsyncIterator[JobschedClient]:
    async with JobschedClient(scheduler.address, timeout=10) as c:
        yield c


@pytest.fixture
async def start(scheduler: SchedulerServer, tmp_path: Path) -> AsyncIterator[Start]:
    """start(*flags): an executor running the command handler the flags configure (as
    `python -m executor FLAGS` does), work directories under tmp_path/work by default."""
    running: list[Executor] = []

    async def starting(*flags: str, work_dir: bool = True) -> Executor:
        argv = [*flags, "--kill-grace", "0.5"]
        if work_dir:
            argv += ["--work-dir", str(tmp_path / "work")]
        handler = CommandHandler(command_settings(parse_args(argv)))
        executor = Executor(
            [scheduler.address],
            name=f"commands-{len(running)}",
            capacity=4,
            registry=builtin_registry([("command", handler)]),
            cancel_grace=2.0,
        )
        running.append(executor)
        await executor.start()
        await executor.wait_registered()
        return executor

    yield starting
    for executor in running:
        await executor.stop(grace=1.0)


async def submit(client: JobschedClient, payload: dict[str, Any], **spec: Any) -> str:
    result = await client.submit_job(job_spec("command", payload=payload, **spec))
    return str(result.job.id)


async def reached(
    client: JobschedClient, job_id: str, state: int, within: float = 20
) -> job_pb2.Job:
    async def check() -> job_pb2.Job:
        job = await client.get(job_id)
        assert job.state == state, (S.Name(job.state), job.last_error)
        return job

    return await assert_eventually(check, within=within)


async def lines(client: JobschedClient, job_id: str) -> list[str]:
    return [line.line async for line in client.logs(job_id)]


def running_pid(pid: int) -> bool:
    """Whether process `pid` exists and has not ended (a zombie waiting for init has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


# A shell that starts two grandchildren, one of which ignores SIGTERM (only SIGKILL ends it),
# prints the three pids and waits.
TREE = "sleep 300 & a=$!; (trap '' TERM; exec sleep 301) & b=$!; echo \"pids $$ $a $b\"; wait"


async def tree_pids(client: JobschedClient, job_id: str) -> list[int]:
    async def printed() -> list[int]:
        found = [line for line in await lines(client, job_id) if line.startswith("pids ")]
        assert found
        return [int(p) for p in found[0].split()[1:]]

    pids = await assert_eventually(printed, within=20)
    assert all(running_pid(pid) for pid in pids)
    return pids


async def all_gone(pids: list[int]) -> None:
    async def gone() -> None:
        assert [pid for pid in pids if running_pid(pid)] == []

    await assert_eventually(gone, within=10)


async def test_a_command_succeeds_with_its_output_environment_and_working_directory(
    start: Start, client: JobschedClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXECUTOR_SECRET", "hunter2")  # not allow-listed: never seen
    monkeypatch.setenv("SHARED_SETTING", "yes")
    await start("--allow-command", SH_GLOB, "--env-allow", "PATH", "--env-allow", "SHARED_SETTING")
    script = (
        'echo "out $GREETING"; echo "problem" >&2; echo "cwd $(pwd)"; '
        'echo "id $JOBSCHED_JOB_ID attempt $JOBSCHED_ATTEMPT"; '
        'test -d "$JOBSCHED_OUTPUT_DIR" && echo "output $JOBSCHED_OUTPUT_DIR"; '
        'echo "secret ${EXECUTOR_SECRET:-unset} shared ${SHARED_SETTING:-unset} '
        'home ${HOME:-unset}"; cat'
    )
    job_id = await submit(
        client,
        {
            "argv": ["sh", "-c", script],
            "env": {"GREETING": "hello"},
            "cwd": "src/app",
            "stdin": "from stdin\nlast line without newline",
        },
    )
    job = await reached(client, job_id, S.JOB_STATE_SUCCEEDED)
    result = json.loads(job.result)
    assert result["exit_code"] == 0
    assert result["stderr_tail"] == "problem"
    assert result["output_cut"] is False
    logged = await lines(client, job_id)
    work = tmp_path / "work"
    [cwd] = [line.removeprefix("cwd ") for line in logged if line.startswith("cwd ")]
    assert Path(cwd).parent.parent.parent == work  # work/<job>-<attempt>-xxx/src/app
    assert Path(cwd).parts[-2:] == ("src", "app")
    attempt_dir = Path(cwd).parent.parent
    assert attempt_dir.name.startswith(f"{job_id}-1-")
    assert sorted(logged) == sorted(
        [
            "out hello",
            "[stderr] problem",
            f"cwd {cwd}",
            f"id {job_id} attempt 1",
            f"output {attempt_dir / 'output'}",  # made for the command
            "secret unset shared yes home unset",  # HOME is allowed by default, not here
            "from stdin",
            "last line without newline",
        ]
    )
    assert list(work.iterdir()) == []  # the attempt's directory was removed


async def test_keep_work_dirs_keeps_them_and_says_where(
    start: Start, client: JobschedClient, tmp_path: Path
) -> None:
    await start("--allow-command", SH_GLOB, "--keep-work-dirs")
    job_id = await submit(client, {"argv": ["sh", "-c", "echo kept > $JOBSCHED_OUTPUT_DIR/f"]})
    job = await reached(client, job_id, S.JOB_STATE_SUCCEEDED)
    work = Path(json.loads(job.result)["work_dir"])
    assert work.parent == tmp_path / "work"
    assert (work / "output" / "f").read_text() == "kept\n"


async def test_files_left_in_the_output_dir_become_artifacts(
    start: Start, client: JobschedClient, tmp_path: Path
) -> None:
    await start("--allow-command", SH_GLOB)
    script = (
        'mkdir -p "$JOBSCHED_OUTPUT_DIR/frames" && printf report > "$JOBSCHED_OUTPUT_DIR/report.txt"'
        ' && printf one > "$JOBSCHED_OUTPUT_DIR/frames/0001.png"'
    )
    job_id = await submit(client, {"argv": ["sh", "-c", script]})
    job = await reached(client, job_id, S.JOB_STATE_SUCCEEDED)
    assert json.loads(job.result)["artifacts"] == ["frames/0001.png", "report.txt"]
    stored = {a.name: a for a in await client.list_artifacts(job_id)}
    assert sorted(stored) == ["frames/0001.png", "report.txt"]
    assert stored["report.txt"].size_bytes == len(b"report")
    assert stored["report.txt"].attempt == 1
    await client.download_artifact(job_id, "report.txt", tmp_path / "got.txt")
    assert (tmp_path / "got.txt").read_bytes() == b"report"

    # A failing command's partial output is kept too.
    failing = await submit(
        client,
        {"argv": ["sh", "-c", 'printf partial > "$JOBSCHED_OUTPUT_DIR/partial.log"; exit 4'],
         "non_retryable_exit_codes": [4]},
    )  # fmt: skip
    await reached(client, failing, S.JOB_STATE_DEAD)
    assert [a.name for a in await client.list_artifacts(failing)] == ["partial.log"]


async def test_a_non_zero_exit_is_retried_unless_listed_as_non_retryable(
    start: Start, client: JobschedClient
) -> None:
    await start("--allow-command", SH_GLOB)
    argv = ["sh", "-c", "echo 'disk full' >&2; exit 3"]
    retried = await submit(client, {"argv": argv}, max_attempts=2, retry_policy=FAST_RETRY)
    final = await submit(client, {"argv": argv, "non_retryable_exit_codes": [3]}, max_attempts=2)
    job = await reached(client, retried, S.JOB_STATE_DEAD)
    assert job.attempt == 2  # retried once, then out of attempts
    assert job.last_error == "exit code 3; stderr tail:\ndisk full"
    job = await reached(client, final, S.JOB_STATE_DEAD)
    assert job.attempt == 1  # not retried
    assert job.last_error.startswith("exit code 3")


@pytest.mark.parametrize("how", ["payload timeout", "job timeout", "cancel"])
async def test_a_timeout_or_cancel_kills_the_whole_process_tree(
    start: Start, client: JobschedClient, how: str
) -> None:
    await start("--allow-command", SH_GLOB)
    payload: dict[str, Any] = {"argv": ["sh", "-c", TREE]}
    spec: dict[str, Any] = {"max_attempts": 1}
    if how == "payload timeout":
        payload["timeout"] = 2
    if how == "job timeout":
        spec["timeout"] = timedelta(seconds=2)
    job_id = await submit(client, payload, **spec)
    pids = await tree_pids(client, job_id)
    if how == "cancel":
        await client.cancel(job_id)
        await reached(client, job_id, S.JOB_STATE_CANCELLED)
    else:
        job = await reached(client, job_id, S.JOB_STATE_DEAD)
        assert "timed out after 2s" in job.last_error
    # The grandchild ignoring SIGTERM got SIGKILL after the grace: nothing outlived the attempt.
    await all_gone(pids)


async def test_an_executor_stopping_kills_the_trees_it_runs(
    start: Start, client: JobschedClient
) -> None:
    executor = await start("--allow-command", SH_GLOB)
    job_id = await submit(client, {"argv": ["sh", "-c", TREE]})
    pids = await tree_pids(client, job_id)
    # The grace ends, the handler is cancelled: SIGKILL to the group at once.
    await executor.stop(grace=0.2)
    await all_gone(pids)
    await reached(client, job_id, S.JOB_STATE_QUEUED)  # handed back unfinished


async def test_whatever_a_finished_command_left_running_is_stopped(
    start: Start, client: JobschedClient
) -> None:
    await start("--allow-command", SH_GLOB)
    # The program exits after the handler has started waiting (the sleep 0.2), while its
    # background process still holds its stdout: the handler must not wait for the pipes.
    script = 'sleep 300 & echo "pids $!"; sleep 0.2'
    job_id = await submit(client, {"argv": ["sh", "-c", script]})
    await reached(client, job_id, S.JOB_STATE_SUCCEEDED)
    found = [line for line in await lines(client, job_id) if line.startswith("pids ")]
    await all_gone([int(found[0].split()[1])])


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid(1)")
async def test_a_process_that_leaves_the_group_does_not_hold_the_attempt(
    start: Start, client: JobschedClient
) -> None:
    # What a process group cannot contain (README: a cgroup's job): the attempt still ends,
    # its pipes closed, and the escaped process is the test's to kill.
    await start("--allow-command", SH_GLOB)
    script = 'setsid sleep 300 & echo "pids $!"; sleep 0.2'
    job_id = await submit(client, {"argv": ["sh", "-c", script]})
    try:
        await reached(client, job_id, S.JOB_STATE_SUCCEEDED)
    finally:
        found = [line for line in await lines(client, job_id) if line.startswith("pids ")]
        if found:
            pid = int(found[0].split()[1])
            if running_pid(pid):
                os.kill(pid, signal.SIGKILL)


async def test_output_beyond_max_output_is_cut_with_one_line(
    start: Start, client: JobschedClient
) -> None:
    await start("--allow-command", SH_GLOB, "--max-output", "100")
    # 30 lines of 10 bytes (9 characters and the newline): 10 fit.
    script = "i=0; while [ $i -lt 30 ]; do echo line-$((i + 1000)); i=$((i + 1)); done"
    job_id = await submit(client, {"argv": ["sh", "-c", script]})
    job = await reached(client, job_id, S.JOB_STATE_SUCCEEDED)
    result = json.loads(job.result)
    assert result["output_cut"] is True
    assert result["output_bytes"] == 300
    logged = await lines(client, job_id)
    assert logged[:10] == [f"line-{i}" for i in range(1000, 1010)]
    assert len(logged) == 11
    assert logged[10].startswith("[output cut: over 100 bytes")


async def test_progress_lines_become_progress_reports(
    start: Start, client: JobschedClient, tmp_path: Path
) -> None:
    await start("--allow-command", SH_GLOB)
    go = tmp_path / "go"
    script = (
        "echo starting; echo '::progress 42 encoding pass 1'; echo '::progress soon'; "
        'while [ ! -e "$GO" ]; do sleep 0.05; done; echo done'
    )
    job_id = await submit(client, {"argv": ["sh", "-c", script], "env": {"GO": str(go)}})

    async def reporting() -> None:
        job = await client.get(job_id)
        assert job.state == S.JOB_STATE_RUNNING
        assert job.progress.percent == 42
        assert job.progress.message == "encoding pass 1"

    await assert_eventually(reporting, within=20)
    go.touch()
    await reached(client, job_id, S.JOB_STATE_SUCCEEDED)
    # The progress line is not a log line; one that only looks like one is.
    assert await lines(client, job_id) == ["starting", "::progress soon", "done"]


async def test_without_allow_command_or_with_no_match_commands_fail_without_retry(
    start: Start, client: JobschedClient
) -> None:
    await start()  # no --allow-command: no commands at all
    job_id = await submit(client, {"argv": ["true"]}, max_attempts=3)
    job = await reached(client, job_id, S.JOB_STATE_DEAD)
    assert job.attempt == 1
    assert "this executor does not allow commands" in job.last_error
    assert "--allow-command" in job.last_error


async def test_a_glob_that_does_not_match_refuses_the_command(
    start: Start, client: JobschedClient
) -> None:
    await start("--allow-command", "/opt/tools/*")
    job_id = await submit(client, {"argv": ["sh", "-c", "echo ran"]}, max_attempts=3)
    job = await reached(client, job_id, S.JOB_STATE_DEAD)
    assert job.attempt == 1
    assert f"this executor does not allow the command {SH}" in job.last_error
    assert await lines(client, job_id) == []


async def test_resource_limits_apply_and_a_job_may_only_narrow_them(
    start: Start, client: JobschedClient
) -> None:
    await start("--allow-command", SH_GLOB, "--limit-files", "64", "--limit-cpu", "1")
    narrowed = await submit(client, {"argv": ["sh", "-c", "ulimit -n"], "limits": {"files": 16}})
    clamped = await submit(client, {"argv": ["sh", "-c", "ulimit -n"], "limits": {"files": 9999}})
    busy = await submit(client, {"argv": ["sh", "-c", "while :; do :; done"]}, max_attempts=1)
    await reached(client, narrowed, S.JOB_STATE_SUCCEEDED)
    await reached(client, clamped, S.JOB_STATE_SUCCEEDED)
    assert await lines(client, narrowed) == ["16"]
    assert await lines(client, clamped) == ["64"]  # never widened: clamped to the executor's
    # One CPU second, then SIGXCPU ends the busy loop.
    job = await reached(client, busy, S.JOB_STATE_DEAD)
    assert job.last_error.startswith("killed by SIGXCPU")


async def test_bad_payloads_are_refused_at_submit_naming_the_field(
    client: JobschedClient, db: Database
) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        await client.submit("command", payload={"argv": "echo hi"})
    assert [field for field, _ in raised.value.field_violations] == ["job.payload.argv"]
    good = job_spec("command", payload={"argv": ["true"]})
    bad = job_spec("command", payload={"argv": ["true"], "env": {"1X": "a"}, "cwd": "../up"})
    with pytest.raises(InvalidArgumentError) as raised:
        await client.submit_jobs([good, good, good, bad])
    assert [field for field, _ in raised.value.field_violations] == [
        "jobs[3].payload.env['1X']",
        "jobs[3].payload.cwd",
    ]
    async with db.read() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM jobs")) == 0


async def test_the_example_script_runs(start: Start, scheduler: SchedulerServer) -> None:
    await start("--allow-command", SH_GLOB)
    printed = await run_example("command_job.py", scheduler.address)
    assert "exit code 0, stderr 'a warning'" in printed
    logs = [line for line in printed if line.startswith("log ")]
    assert sorted(logs) == ["log [stderr] a warning", "log hello from build"]
    # The failure message: the exit code, then the tail of stderr on the next line.
    assert printed[-2:] == [
        "failed DEAD after attempt 1: exit code 2; stderr tail:",
        "no such input",
    ]


@pytest.mark.timeout(90)
async def test_the_command_line_configures_command_jobs(
    scheduler: SchedulerServer, services: list[Service], client: JobschedClient, tmp_path: Path
) -> None:
    # python -m executor without the flag refuses; with JOBSCHED_ALLOW_COMMAND it runs them.
    refusing = await start_executor(services, tmp_path, scheduler.address, env=environment())
    refused = await submit(client, {"argv": ["sh", "-c", "echo ran"]}, max_attempts=3)
    job = await reached(client, refused, S.JOB_STATE_DEAD, within=30)
    assert "started without --allow-command" in job.last_error
    await refusing.stop()
    services.remove(refusing)
    await start_executor(
        services,
        tmp_path,
        scheduler.address,
        "--work-dir",
        str(tmp_path / "work"),
        env=environment(JOBSCHED_ALLOW_COMMAND=f"/opt/none/*, {SH_GLOB}"),
    )
    ran = await submit(client, {"argv": ["sh", "-c", "echo ran"]})
    await reached(client, ran, S.JOB_STATE_SUCCEEDED, within=30)
    assert await lines(client, ran) == ["ran"]
