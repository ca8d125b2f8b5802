"""The built-in `command` job type: run a program for a job (README "Command jobs").

`CommandHandler` runs one attempt:

1. the payload is read (executor/command_payload.py);
2. argv[0] is resolved to an absolute path (shutil.which on the job's PATH; a path with a slash
   is taken relative to the working directory) and must match one of the executor's
   ``--allow-command`` globs (fnmatch, case-sensitive; ``*`` also matches ``/``). No globs, no
   match or no such program: the attempt fails non-retryably. There is no shell unless a glob
   allows one (``--allow-command /bin/sh``) and the job runs ``["sh", "-c", ...]``;
3. the attempt gets a working directory of its own under ``--work-dir`` (default the system's
   temporary directory), with ``output/`` inside it as JOBSCHED_OUTPUT_DIR (files left there
   become the job's artifacts, named by their path under it, once the program has ended,
   whatever its exit code), removed after the attempt unless ``--keep-work-dirs``;
4. the environment is the executor's variables named by ``--env-allow`` (default PATH, LANG,
   LC_ALL, TZ, HOME), then the job's ``env``, then JOBSCHED_JOB_ID, JOBSCHED_ATTEMPT,
   JOBSCHED_OUTPUT_DIR and, when the job has a trace context, TRACEPARENT (the attempt span's
   with tracing on, else the submit's);
5. the program runs in a process group of its own with the resource limits
   (executor/processes.py); its output becomes log lines and progress (executor/command_output.py);
6. a cancel, the job's timeout or the payload's ``timeout`` sends SIGTERM to the group, then
   SIGKILL after ``--kill-grace`` (at the latest when the executor's cancel grace ends and the
   handler is cancelled: then SIGKILL at once). When the program ends, whatever it left running
   in its group gets the same treatment: no process of the group outlives the attempt;
7. exit 0 succeeds with a JSON result (exit_code, stderr_tail, output_bytes, output_cut,
   artifacts: the names uploaded);
   another code fails, retryable unless in ``non_retryable_exit_codes``; a signal fails
   retryable. The failure message has the exit code and the tail of stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from executor.command_output import OutputCapture
from executor.command_payload import CommandSpec, parse_command
from executor.handlers import JobCancelledError, JobContext, NonRetryableError, RetryableError
from executor.processes import Limits, signal_name, spawn
from jobsched.errors import JobschedError

COMMAND_TYPE = "command"
DEFAULT_ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")
DEFAULT_MAX_OUTPUT = 1024 * 1024
DEFAULT_KILL_GRACE = 3.0
READ_CHUNK = 64 * 1024
# After the group is gone its pipes close at once; a process that left the group (setsid) may
# hold them open, so the last output is awaited this long at most.
PIPE_DRAIN_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """The executor's configuration of command jobs (executor/command_options.py)."""

    allow: tuple[str, ...] = ()  # globs of absolute program paths; empty: no commands
    work_dir: Path | None = None  # None: the system's temporary directory
    keep_work_dirs: bool = False
    env_allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    max_output: int = DEFAULT_MAX_OUTPUT
    kill_grace: float = DEFAULT_KILL_GRACE
    limits: Limits = field(default_factory=Limits)


def resolve_program(argv0: str, cwd: str, path: str) -> str | None:
    """The absolute path argv[0] runs, or None when there is no such executable."""
    if "/" in argv0:
        candidate = os.path.abspath(os.path.join(cwd, argv0))
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
        return None
    found = shutil.which(argv0, path=path)
    return None if found is None else os.path.abspath(found)


def allowed(program: str, globs: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(program, glob) for glob in globs)


class CommandHandler:
    """The handler of the `command` job type (an ``async def __call__``: runs on the handler
    loop and never blocks it)."""

    def __init__(self, settings: CommandSettings, environ: Mapping[str, str] = os.environ):
        self.settings = settings
        self._environ = environ

    async def __call__(self, ctx: JobContext) -> dict[str, Any]:
        spec = parse_command(ctx.payload)
        if not self.settings.allow:
            raise NonRetryableError(
                f"this executor does not allow commands ({spec.argv[0]!r}): it was started "
                "without --allow-command"
            )
        base = self.settings.work_dir
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{ctx.job_id}-{ctx.attempt}-", dir=base))
        try:
            return await self._run(ctx, spec, work)
        finally:
            if not self.settings.keep_work_dirs:
                await asyncio.to_thread(shutil.rmtree, work, ignore_errors=True)

    def environment(self, ctx: JobContext, spec: CommandSpec, output: Path) -> dict[str, str]:
        env = {
            name: self._environ[name] for name in self.settings.env_allow if name in self._environ
        }
        env.update(spec.env)
        env["JOBSCHED_JOB_ID"] = ctx.job_id
        env["JOBSCHED_ATTEMPT"] = str(ctx.attempt)
        env["JOBSCHED_OUTPUT_DIR"] = str(output)
        if ctx.traceparent:
            # W3C trace context for the program's own spans (OpenTelemetry's env carrier).
            env["TRACEPARENT"] = ctx.traceparent
        return env

    async def _run(self, ctx: JobContext, spec: CommandSpec, work: Path) -> dict[str, Any]:
        output = work / "output"
        output.mkdir()
        cwd = work / spec.cwd
        cwd.mkdir(parents=True, exist_ok=True)
        env = self.environment(ctx, spec, output)
        program = resolve_program(spec.argv[0], str(cwd), env.get("PATH", os.defpath))
        if program is None:
            raise NonRetryableError(f"command not found on this executor: {spec.argv[0]!r}")
        if not allowed(program, self.settings.allow):
            raise NonRetryableError(
                f"this executor does not allow the command {program} "
                "(no --allow-command pattern matches it)"
            )
        limits = self.settings.limits.narrowed(spec.cpu, spec.memory, spec.files)
        try:
            group = await spawn(
                spec.argv,
                executable=program,
                cwd=str(cwd),
                env=env,
                limits=limits,
                stdin=spec.stdin is not None,
            )
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | PermissionError) or exc.errno == errno.ENOEXEC:
                raise NonRetryableError(f"could not start {program}: {exc}") from None
            raise RetryableError(f"could not start {program}: {exc}") from None
        capture = OutputCapture(
            max_output=self.settings.max_output,
            log=ctx.log,
            progress=lambda percent, message: ctx.progress(percent, message=message),
        )
        process = group.process
        tasks = [
            asyncio.ensure_future(_pump(process.stdout, "stdout", capture)),
            asyncio.ensure_future(_pump(process.stderr, "stderr", capture)),
        ]
        if spec.stdin is not None:
            tasks.append(asyncio.ensure_future(_feed(process.stdin, spec.stdin.encode())))
        exited = asyncio.ensure_future(group.exited())
        stopping = asyncio.ensure_future(ctx.cancelled.wait())
        try:
            done, _ = await asyncio.wait(
                {exited, stopping}, timeout=spec.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            ended = exited in done
            # Stops the program if it still runs (SIGTERM, grace, SIGKILL), and whatever it
            # left in its group if it ended; then the last of the output.
            await group.stop(self.settings.kill_grace)
            await asyncio.wait(tasks, timeout=PIPE_DRAIN_SECONDS)
        finally:
            # Also when this task is cancelled (the executor's cancel grace ran out, or it
            # stops): nothing of the group may outlive the attempt.
            for task in (*tasks, stopping):
                task.cancel()
            await group.close()
            await asyncio.gather(*tasks, stopping, exited, return_exceptions=True)
        if not ended:
            if ctx.cancelled.is_set():
                raise JobCancelledError()
            raise RetryableError(
                _describe(f"timed out after {spec.timeout:g}s (the payload's timeout)", capture)
            )
        uploaded = await self._upload_outputs(ctx, output)
        result = self._outcome(spec, group.returncode, capture, work)
        result["artifacts"] = uploaded
        return result

    async def _upload_outputs(self, ctx: JobContext, output: Path) -> list[str]:
        """Every file the command left in JOBSCHED_OUTPUT_DIR, as an artifact named by its path
        under it ("report.pdf", "frames/0001.png"), also when the command failed (its partial
        output helps whoever looks); the names uploaded, in order."""
        files = await asyncio.to_thread(
            lambda: sorted(p for p in output.rglob("*") if p.is_file() and not p.is_symlink())
        )
        names = []
        for path in files:
            name = path.relative_to(output).as_posix()
            try:
                await ctx.upload(name, path)
            except JobschedError as exc:
                # Past the scheduler's size limits another try would fail the same way.
                if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise NonRetryableError(f"output file {name!r}: {exc.message}") from None
                raise RetryableError(f"output file {name!r} not stored: {exc.message}") from None
            names.append(name)
        return names

    def _outcome(
        self, spec: CommandSpec, code: int | None, capture: OutputCapture, work: Path
    ) -> dict[str, Any]:
        assert code is not None
        if code == 0:
            result: dict[str, Any] = {
                "exit_code": 0,
                "stderr_tail": capture.stderr_tail,
                "output_bytes": capture.output_bytes,
                "output_cut": capture.cut,
            }
            if self.settings.keep_work_dirs:
                result["work_dir"] = str(work)
            return result
        if code < 0:
            name = signal_name(code)
            what = f"killed by {name}"
            if name == "SIGXCPU":
                what += " (over its CPU time limit)"
            raise RetryableError(_describe(what, capture))
        message = _describe(f"exit code {code}", capture)
        if code in spec.non_retryable_exit_codes:
            raise NonRetryableError(message)
        raise RetryableError(message)


def _describe(what: str, capture: OutputCapture) -> str:
    tail = capture.stderr_tail
    return f"{what}; stderr tail:\n{tail}" if tail else what


async def _pump(reader: asyncio.StreamReader | None, stream: str, capture: OutputCapture) -> None:
    assert reader is not None
    while chunk := await reader.read(READ_CHUNK):
        capture.feed(stream, chunk)
    capture.close(stream)


async def _feed(writer: asyncio.StreamWriter | None, data: bytes) -> None:
    assert writer is not None
    # A program that exits without reading all of its input is not an error.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        writer.write(data)
        await writer.drain()
    writer.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await writer.wait_closed()
