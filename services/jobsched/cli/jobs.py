"""Job commands: submit, watch, logs, status, ls (and ls --watch), cancel, retry (one job or the
dead-letter queue), delete, priority."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from contextlib import aclosing
from typing import Any

from rich.console import Console
from rich.table import Table

from jobsched.cli.arguments import (
    DEFAULT_LIMIT,
    MAX_PAGE_SIZE,
    add_client_command,
    add_retry_options,
    duration_arg,
    json_payload,
    label,
    positive_int,
    priority,
    retry_policy_of,
    state_arg,
    timestamp_arg,
)
from jobsched.cli.exits import EXIT_OK
from jobsched.cli.output import (
    first_line,
    make_console,
    print_events,
    print_job,
    print_jobs,
    print_json,
    state_label,
    state_name,
    time_text,
    to_dict,
)
from jobsched.cli.watching import follow, log_text
from jobsched.client import JobschedClient
from jobsched.v1 import job_pb2, job_service_pb2

_RETRY_BATCH = 1000  # jobs per RetryJobs call (the server's default)


async def _submit(client: JobschedClient, args: argparse.Namespace) -> int:
    result = await client.submit_job(
        {
            "type": args.type,
            "queue": args.queue,
            "payload": args.payload,
            "priority": args.priority,
            "max_attempts": args.max_attempts,
            "run_at": args.run_at,
            "labels": dict(args.labels),
            "idempotency_key": args.idempotency_key,
            "timeout": args.timeout_job,
            "retry_policy": retry_policy_of(args),
            "depends_on": args.after,
        }
    )
    if args.json and args.watch:  # the first of the JSON lines that follow
        print(json.dumps(to_dict(result.job), sort_keys=True, ensure_ascii=False), flush=True)
    elif args.json:
        print_json(to_dict(result.job))
    else:
        print(result.job.id)
        if not result.created:
            print("note: idempotency key already used; this is the existing job", file=sys.stderr)
    if args.watch:
        return await follow(client, result.job.id, as_json=args.json)
    return EXIT_OK


async def _watch(client: JobschedClient, args: argparse.Namespace) -> int:
    return await follow(client, args.id, as_json=args.json)


async def _logs(client: JobschedClient, args: argparse.Namespace) -> int:
    lines = client.logs(args.id, args.attempt, page_size=MAX_PAGE_SIZE)
    async with aclosing(lines) as stream:
        async for line in stream:
            if args.json:
                print(json.dumps(to_dict(line), sort_keys=True, ensure_ascii=False))
            else:
                print(log_text(line))
    return EXIT_OK


async def _status(client: JobschedClient, args: argparse.Namespace) -> int:
    response = await client.status(args.id, include_events=args.events)
    job, events = response.job, list(response.events)
    if args.json:
        if args.events:
            print_json({"job": to_dict(job), "events": [to_dict(e) for e in events]})
        else:
            print_json(to_dict(job))
        return EXIT_OK
    console = make_console()
    print_job(console, job)
    if response.dependencies:
        _print_dependencies(console, job, response.dependencies)
    if args.events:
        print_events(console, events)
    return EXIT_OK


def _print_dependencies(
    console: Console, job: job_pb2.Job, dependencies: Sequence[job_service_pb2.Dependency]
) -> None:
    title = f"depends on ({job.pending_dependencies} of {len(dependencies)} not succeeded yet)"
    table = Table(title=title, title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("state")
    for dependency in dependencies:
        table.add_row(dependency.id, state_name(dependency.state))
    console.print(table)


async def _ls(client: JobschedClient, args: argparse.Namespace) -> int:
    if args.watch:
        return await _watch_changes(client, args)
    limit: int = args.limit
    page_size = min(limit, MAX_PAGE_SIZE) if limit else MAX_PAGE_SIZE
    jobs_iter = (
        client.history(queue=args.queue, type=args.type, states=args.states, page_size=page_size)
        if args.history
        else client.list_active(
            queue=args.queue, type=args.type, states=args.states, page_size=page_size
        )
    )
    jobs: list[job_pb2.Job] = []
    async with aclosing(jobs_iter) as stream:
        async for job in stream:
            jobs.append(job)
            if limit and len(jobs) >= limit:
                break
    if args.json:
        print_json([to_dict(job) for job in jobs])
    else:
        print_jobs(make_console(), jobs, history=args.history)
    return EXIT_OK


def _change_line(job: job_pb2.Job) -> str:
    parts = [
        time_text(job, "update_time"),
        f"{state_label(job):<10}",
        job.id,
        job.queue,
        job.type,
        f"attempt {job.attempt}/{job.max_attempts}",
    ]
    if job.state == job_pb2.JOB_STATE_RUNNING and job.progress.HasField("update_time"):
        parts.append(f"{job.progress.percent:g}%")
        parts.extend(p for p in (job.progress.step, job.progress.message) if p)
    if job.last_error and job.state != job_pb2.JOB_STATE_SUCCEEDED:
        parts.append(f"error: {first_line(job.last_error)}")
    return " ".join(parts)


async def _watch_changes(client: JobschedClient, args: argparse.Namespace) -> int:
    """`ls --watch`: one line per change of a matching job (WatchJobs) until SIGINT or SIGTERM."""

    async def follow() -> None:
        stream = client.watch_jobs(queue=args.queue, type=args.type, states=args.states)
        async with aclosing(stream) as items:
            async for item in items:
                kind = item.WhichOneof("item")
                if kind == "subscribed":
                    print("watching for changes (Ctrl-C to stop)", file=sys.stderr, flush=True)
                elif kind == "changes_dropped":
                    print(
                        "jobsched: fell behind, some changes were not shown (run ls to re-list)",
                        file=sys.stderr,
                        flush=True,
                    )
                elif args.json:
                    print(json.dumps(to_dict(item.job), sort_keys=True), flush=True)
                else:
                    print(_change_line(item.job), flush=True)

    task = asyncio.ensure_future(follow())
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not task.cancelled() or (current is not None and current.cancelling()):
            raise  # not our signal: let the cancellation through
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return EXIT_OK


async def _cancel(client: JobschedClient, args: argparse.Namespace) -> int:
    job = await client.cancel(args.id, reason=args.reason)
    if args.json:
        print_json(to_dict(job))
    elif job.state == job_pb2.JOB_STATE_CANCELLED:
        print(f"{job.id} cancelled")
    else:
        print(f"{job.id} cancel requested ({state_name(job.state)}; the executor will stop it)")
    return EXIT_OK


async def _retry(client: JobschedClient, args: argparse.Namespace) -> int:
    if args.id is None:
        return await _retry_many(client, args)
    job = await client.retry(args.id)
    if args.json:
        print_json(to_dict(job))
    else:
        print(f"{job.id} {state_name(job.state)} (attempt {job.attempt + 1} of {job.max_attempts})")
    return EXIT_OK


_RETRY_BULK_OPTIONS = ("--dead", "--cancelled", "--queue", "--type", "--limit")


def _check_retry(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """`retry` takes one job id or the bulk options, never both (argparse cannot say that)."""
    bulk = args.dead or args.cancelled or args.queue or args.type or args.limit is not None
    if args.id is not None and bulk:
        parser.error(
            f"a job ID and the bulk options ({', '.join(_RETRY_BULK_OPTIONS)}) exclude each other"
        )
    if args.id is None and not (args.dead or args.cancelled):
        parser.error("give a job ID, or --dead and/or --cancelled to retry many jobs")


async def _retry_many(client: JobschedClient, args: argparse.Namespace) -> int:
    """Bulk retry, oldest finished first, _RETRY_BATCH jobs per call, until none match or
    --limit jobs were retried."""
    states = [
        name for name, chosen in (("dead", args.dead), ("cancelled", args.cancelled)) if chosen
    ]
    limit: int = args.limit or 0
    retried, more = 0, True
    while more and (not limit or retried < limit):
        batch = min(_RETRY_BATCH, limit - retried) if limit else _RETRY_BATCH
        count, more = await client.retry_many(
            queue=args.queue, type=args.type, states=states, limit=batch
        )
        retried += count
        if count == 0:
            break
    if args.json:
        print_json({"retried": retried, "more": more})
    else:
        print(f"retried {retried} job{'' if retried == 1 else 's'}")
        if more:
            print("more jobs match: run it again to retry them", file=sys.stderr)
    return EXIT_OK


async def _delete(client: JobschedClient, args: argparse.Namespace) -> int:
    await client.delete(args.id)
    if args.json:
        print_json({"id": args.id, "deleted": True})
    else:
        print(f"{args.id} deleted")
    return EXIT_OK


async def _set_priority(client: JobschedClient, args: argparse.Namespace) -> int:
    job, changed = await client.update_priority(args.id, args.level)
    if args.json:
        print_json({"job": to_dict(job), "changed": changed})
    else:
        print(f"{job.id} priority {job.priority}" + ("" if changed else " (unchanged)"))
    return EXIT_OK


# -- parsers -----------------------------------------------------------------------------------


def add_commands(commands: Any) -> None:
    """Add the job commands to the `jobsched` subcommands."""
    _add_submit(commands)
    _add_inspection(commands)
    _add_ls(commands)
    _add_control(commands)


def _add_submit(commands: Any) -> None:
    submit = add_client_command(commands, "submit", _submit, "submit a job and print its id")
    submit.add_argument("--type", required=True, help="job type (selects the handler)")
    submit.add_argument("--queue", default="", help="queue (default: 'default')")
    submit.add_argument("--payload", type=json_payload, help="payload, a JSON document")
    submit.add_argument(
        "--priority", type=priority, help="0..100 or low/medium/high (default medium = 50)"
    )
    submit.add_argument("--max-attempts", type=int, help="attempts before DEAD (default 3)")
    submit.add_argument(
        "--run-at",
        type=timestamp_arg,
        help="earliest start, ISO 8601 (without an offset: local time)",
    )
    submit.add_argument(
        "--label",
        dest="labels",
        type=label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label (repeatable)",
    )
    submit.add_argument("--idempotency-key", default="", help="submit at most once per key")
    submit.add_argument(
        "--after",
        action="append",
        default=[],
        metavar="ID",
        help="run only after this job succeeded (repeatable); cancelled if it ends DEAD or "
        "CANCELLED",
    )
    submit.add_argument(
        "--job-timeout",
        dest="timeout_job",
        type=duration_arg,
        metavar="D",
        help="execution timeout of each attempt, e.g. 30s or 5m (default: the queue's)",
    )
    add_retry_options(submit, "unset options: the queue's defaults")
    submit.add_argument(
        "--json",
        action="store_true",
        help="print the job as JSON (with --watch: then one JSON line per watch item)",
    )
    submit.add_argument(
        "--watch", action="store_true", help="then show live progress until the job ends"
    )


def _add_inspection(commands: Any) -> None:
    watch = add_client_command(
        commands, "watch", _watch, "show a job's live progress until it ends"
    )
    watch.add_argument("id", help="job id")
    watch.add_argument(
        "--json",
        action="store_true",
        help="one JSON line per item (snapshot, event, progress, log) instead of the bar",
    )

    logs = add_client_command(commands, "logs", _logs, "print a job's log lines, by attempt")
    logs.add_argument("id", help="job id")
    logs.add_argument(
        "--attempt",
        type=positive_int,
        default=0,
        help="only the lines of this attempt (default 0: every attempt)",
    )
    logs.add_argument(
        "--json", action="store_true", help="one JSON object per line (attempt, line_number, ...)"
    )

    status = add_client_command(commands, "status", _status, "show a job")
    status.add_argument("id", help="job id")
    status.add_argument("--events", action="store_true", help="also show its history")
    status.add_argument(
        "--json",
        action="store_true",
        help="print the job as JSON ({job, events} with --events)",
    )


def _add_ls(commands: Any) -> None:
    ls = add_client_command(commands, "ls", _ls, "list active (default) or finished jobs")
    which = ls.add_mutually_exclusive_group()
    which.add_argument(
        "--active",
        action="store_true",
        help="WAITING, SCHEDULED, QUEUED and RUNNING jobs, oldest first (default)",
    )
    which.add_argument(
        "--history",
        action="store_true",
        help="SUCCEEDED, DEAD and CANCELLED jobs, last finished first",
    )
    which.add_argument(
        "--watch",
        action="store_true",
        help="instead of a list, one line per change of a matching job (any state unless "
        "--state is given; a job leaving those states is shown once) until Ctrl-C",
    )
    ls.add_argument("--queue", help="only this queue")
    ls.add_argument("--type", help="only this job type")
    ls.add_argument(
        "--state",
        dest="states",
        type=state_arg,
        action="extend",
        nargs="+",
        default=[],
        metavar="STATE",
        help="only these states, e.g. queued or dead (repeatable)",
    )
    ls.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        help="at most this many jobs, 0 for all (default %(default)s)",
    )
    ls.add_argument("--json", action="store_true", help="print a JSON list")


def _add_control(commands: Any) -> None:
    cancel = add_client_command(commands, "cancel", _cancel, "cancel a job")
    cancel.add_argument("id", help="job id")
    cancel.add_argument("--reason", default="", help="recorded in the job's history")
    cancel.add_argument("--json", action="store_true", help="print the job as JSON")

    retry = add_client_command(
        commands,
        "retry",
        _retry,
        "move a DEAD or CANCELLED job back to QUEUED, or many at once (--dead, --cancelled)",
    )
    retry.add_argument("id", nargs="?", help="job id (or the bulk options below instead)")
    bulk = retry.add_argument_group(
        "bulk retry", "retry every matching job, oldest finished first, 1000 per call"
    )
    bulk.add_argument("--dead", action="store_true", help="DEAD jobs (the dead-letter queue)")
    bulk.add_argument("--cancelled", action="store_true", help="CANCELLED jobs")
    bulk.add_argument("--queue", help="only this queue")
    bulk.add_argument("--type", help="only this job type")
    bulk.add_argument(
        "--limit",
        type=positive_int,
        help="at most this many jobs in all (default: every matching job)",
    )
    retry.add_argument(
        "--json",
        action="store_true",
        help="print the job as JSON (bulk: {retried, more})",
    )
    retry.set_defaults(check=lambda args: _check_retry(retry, args))

    delete = add_client_command(commands, "delete", _delete, "delete a job and its history")
    delete.add_argument("id", help="job id")
    delete.add_argument("--json", action="store_true", help="print the outcome as JSON")

    reorder = add_client_command(
        commands, "priority", _set_priority, "change the priority of a job that has not started"
    )
    reorder.add_argument("id", help="job id")
    reorder.add_argument("level", type=priority, help="0..100 or low/medium/high")
    reorder.add_argument("--json", action="store_true", help="print {job, changed} as JSON")
