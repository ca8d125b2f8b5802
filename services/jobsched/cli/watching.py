"""`jobsched watch ID` and `submit --watch`: a job followed live until it ends, as a progress
bar with the log lines printed above it, or (--json) as one JSON line per WatchJob item for
scripts. Exit 0 only if the job succeeded (EXIT_JOB_FAILED otherwise)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from jobsched.cli.exits import EXIT_JOB_FAILED, EXIT_OK
from jobsched.cli.output import make_console, state_name, to_dict
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2, job_service_pb2


async def follow(client: JobschedClient, job_id: str, *, as_json: bool = False) -> int:
    if as_json:
        return await _json_lines(client, job_id)
    return await _bar(client, job_id)


async def _json_lines(client: JobschedClient, job_id: str) -> int:
    """Each item as protobuf JSON (proto field names), one per line, flushed as it comes."""
    final: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED
    async for item in client.watch(job_id):
        if item.HasField("snapshot"):
            final = item.snapshot.state
        elif item.HasField("event"):
            final = item.event.to_state
        print(json.dumps(to_dict(item), sort_keys=True, ensure_ascii=False), flush=True)
    return EXIT_OK if final == job_pb2.JOB_STATE_SUCCEEDED else EXIT_JOB_FAILED


async def _bar(client: JobschedClient, job_id: str) -> int:
    """A live progress bar (percent, step, ETA), with the log lines printed above it, until the
    job ends; exit 0 only if it succeeded."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
    from rich.text import Text

    final: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED
    with Progress(
        TextColumn("{task.fields[state]:<10}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[step]} {task.fields[eta]}"),
        console=make_console(),
    ) as bar:
        task = bar.add_task("job", total=100, state="", step="", eta="")
        async for item in client.watch(job_id):
            kind = item.WhichOneof("item")
            if kind == "snapshot":
                final = item.snapshot.state
                progress = item.snapshot.progress
            elif kind == "event":
                final = item.event.to_state
                progress = None
            elif kind == "progress":
                progress = item.progress
            elif kind == "log":
                # Text, not markup: a handler's line is printed exactly as it was logged.
                bar.console.print(Text(log_text(item.log)))
                continue
            else:
                continue
            fields: dict[str, Any] = {"state": state_name(final)}
            if progress is not None:
                eta = ""
                if progress.HasField("eta"):
                    eta = "ETA " + progress.eta.ToDatetime(tzinfo=UTC).strftime("%H:%M:%S")
                fields |= {"completed": progress.percent, "step": progress.step, "eta": eta}
            if final == job_pb2.JOB_STATE_SUCCEEDED:
                fields["completed"] = 100
            bar.update(task, **fields)
    print(f"job {job_id} {state_name(final)}")
    return EXIT_OK if final == job_pb2.JOB_STATE_SUCCEEDED else EXIT_JOB_FAILED


def log_text(line: job_service_pb2.LogLine) -> str:
    return f"attempt {line.attempt} | {line.line}"
