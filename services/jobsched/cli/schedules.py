"""`jobsched schedules`: create cron schedules, list, show, pause, resume, delete and trigger
them."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from jobsched.cli.arguments import MAX_PAGE_SIZE, add_client_command, duration_arg, json_payload
from jobsched.cli.exits import EXIT_OK
from jobsched.cli.output import (
    bytes_preview,
    make_console,
    print_json,
    seconds_text,
    time_text,
    to_dict,
    ts_text,
)
from jobsched.client import JobschedClient
from jobsched.v1 import schedule_service_pb2


def _policy_name(value: int, enum: Any, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower().replace("_", "-")


def _schedule_rows(schedule: schedule_service_pb2.Schedule) -> list[tuple[str, str]]:
    template = schedule.job_template
    catchup = _policy_name(
        schedule.catchup_policy, schedule_service_pb2.CatchupPolicy, "CATCHUP_POLICY_"
    )
    if schedule.catchup_policy != schedule_service_pb2.CATCHUP_POLICY_NONE:
        catchup += f" (within {seconds_text(schedule.catchup_window.ToTimedelta())})"
    next_fires = [ts_text(ts) for ts in schedule.next_fire_times]
    rows = [
        ("id", schedule.id),
        ("name", schedule.name),
        ("cron", f"{schedule.cron}  ({schedule.time_zone})"),
        ("paused", "yes" if schedule.paused else "no"),
        ("job", f"type {template.type}, queue {template.queue or 'default'}"),
        (
            "overlap",
            _policy_name(
                schedule.overlap_policy, schedule_service_pb2.OverlapPolicy, "OVERLAP_POLICY_"
            ),
        ),
        ("catch-up", catchup),
        ("next fires", ", ".join(next_fires) if next_fires else "-"),
        ("last fire", time_text(schedule, "last_fire_time")),
        ("last job", schedule.last_job_id or "-"),
        ("created", time_text(schedule, "create_time")),
    ]
    if template.payload:
        rows.insert(5, ("payload", bytes_preview(template.payload)))
    return rows


def _print_schedule(schedule: schedule_service_pb2.Schedule) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in _schedule_rows(schedule):
        grid.add_row(label, value)
    make_console().print(grid)


async def _schedules(client: JobschedClient, args: argparse.Namespace) -> int:
    action = args.schedules_action
    if action == "ls":
        schedules = [s async for s in client.list_schedules(page_size=MAX_PAGE_SIZE)]
        if args.json:
            print_json([to_dict(s) for s in schedules])
            return EXIT_OK
        table = Table()
        for column in ("name", "cron", "time zone", "type", "paused", "next fire", "last fire"):
            table.add_column(column, no_wrap=True)
        for s in schedules:
            table.add_row(
                s.name,
                s.cron,
                s.time_zone,
                s.job_template.type,
                "yes" if s.paused else "",
                ts_text(s.next_fire_times[0]) if s.next_fire_times else "-",
                time_text(s, "last_fire_time"),
            )
        make_console().print(table)
        return EXIT_OK
    if action == "trigger":
        job, skipped = await client.trigger_schedule(args.name)
        if args.json:
            print_json({"job": to_dict(job) if job is not None else None, "skipped": skipped})
        elif job is None:
            print("skipped: the previous run is still active (overlap policy skip)")
        else:
            print(job.id)
        return EXIT_OK
    if action == "delete":
        await client.delete_schedule(args.name)
        print(f"{args.name} deleted")
        return EXIT_OK
    if action == "create":
        schedule = await client.create_schedule(
            args.name,
            args.cron,
            {"type": args.type, "queue": args.queue, "payload": args.payload},
            time_zone=args.tz,
            overlap=args.overlap,
            catchup=args.catchup,
            catchup_window=args.catchup_window,
        )
    elif action == "pause":
        schedule = await client.pause_schedule(args.name)
    elif action == "resume":
        schedule = await client.resume_schedule(args.name)
    else:  # show
        schedule = await client.get_schedule(args.name)
    if args.json:
        print_json(to_dict(schedule))
    else:
        _print_schedule(schedule)
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Add `jobsched schedules` and its actions."""
    schedules = add_client_command(
        commands,
        "schedules",
        _schedules,
        "cron schedules: create, list, show, pause, resume, trigger",
    )
    schedule_actions = schedules.add_subparsers(
        dest="schedules_action", required=True, metavar="ACTION"
    )
    create = schedule_actions.add_parser(
        "create",
        help="submit a job at each fire time of a cron expression",
        description="Submit a job at each fire time of a five-field cron expression, e.g. "
        "'30 2 * * *', evaluated in --tz. On daylight-saving days a local time that does not "
        "exist fires at the end of the gap, one that occurs twice fires once, at its first "
        "occurrence.",
    )
    create.add_argument("name", help="schedule name, unique in the tenant")
    create.add_argument("--cron", required=True, metavar="EXPR", help="e.g. '*/15 9-17 * * 1-5'")
    create.add_argument("--tz", default="", metavar="ZONE", help="IANA time zone (default UTC)")
    create.add_argument("--type", required=True, help="job type of the submitted jobs")
    create.add_argument("--queue", default="", help="queue (default: 'default')")
    create.add_argument("--payload", type=json_payload, help="payload, a JSON document")
    create.add_argument(
        "--overlap",
        choices=["allow", "skip", "cancel-previous"],
        default="allow",
        help="while the previous run is active: run anyway (default), skip this fire, or "
        "cancel the previous run",
    )
    create.add_argument(
        "--catchup",
        choices=["none", "latest", "all"],
        default="none",
        help="fires missed while no scheduler led: skip them (default), run the latest, or "
        "run them all (within --catchup-window)",
    )
    create.add_argument(
        "--catchup-window",
        type=duration_arg,
        metavar="DURATION",
        help="how far back latest/all look, e.g. 6h (default 1d)",
    )
    create.add_argument("--json", action="store_true", help="print the schedule as JSON")
    schedules_ls = schedule_actions.add_parser("ls", help="every schedule, by name")
    schedules_ls.add_argument("--json", action="store_true", help="print a JSON list")
    for name, text in (
        ("show", "show a schedule and its next 5 fire times"),
        ("pause", "stop firing (fires missed while paused are not caught up)"),
        ("resume", "fire again from the next fire time"),
        ("delete", "delete a schedule (the jobs it submitted stay)"),
        ("trigger", "submit the schedule's job now (the overlap policy applies)"),
    ):
        action = schedule_actions.add_parser(name, help=text, description=text)
        action.add_argument("name", help="schedule name or id")
        if name != "delete":
            action.add_argument("--json", action="store_true", help="print the result as JSON")
