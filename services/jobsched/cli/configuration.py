"""`jobsched config show`: the effective configuration of each program (scheduler, executor,
client) as a TOML file would say it, each key with where its value came from (flag, env NAME,
file PATH, default), secrets redacted.

The scheduler's and the executor's command lines come from the `jobsched.programs` entry point
group (pyproject.toml), so that the client package does not import the server: a client-only
install shows the scheduler's table as needing the server extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from jobsched.cli.exits import EXIT_BAD_INPUT, EXIT_ERROR
from jobsched.cli.services import SERVER_EXTRA_HINT
from jobsched.config import CONFIG_ENV, Program, Resolved, redact

SECTIONS = ("scheduler", "executor", "dashboard", "client")
# Options that are not settings: what a command line does once, not how a program runs.
NOT_SETTINGS = {"migrate_only", "dev"}


def add_commands(commands: Any) -> None:
    config = commands.add_parser(
        "config",
        help="show the effective configuration",
        description="Show the effective configuration: each key of each program, its value and "
        f"where it came from (flag, environment, the file of --config or ${CONFIG_ENV}, or the "
        "default). Secrets are redacted.",
    )
    actions = config.add_subparsers(dest="config_action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the effective configuration")
    show.add_argument(
        "section",
        nargs="*",
        metavar="PROGRAM",
        help=f"only these programs ({', '.join(SECTIONS)}; default all)",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    # Read by the configuration loader wherever it stands on the command line.
    show.add_argument("--config", dest="show_config", metavar="FILE", help=argparse.SUPPRESS)
    show.set_defaults(local=show_config)


def _program(name: str) -> Program | str:
    """The scheduler's or the executor's Program, or one line saying why it is not there."""
    points = metadata.entry_points(group="jobsched.programs", name=name)
    if not points:
        return f"not installed: {SERVER_EXTRA_HINT}"
    [point] = list(points)
    try:
        program: Program = point.load()
    except ModuleNotFoundError as exc:
        return f"needs the server extra (no module {exc.name!r}): {SERVER_EXTRA_HINT}"
    return program


def _effective(resolved: Resolved) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for key in sorted(resolved.keys):
        if key in NOT_SETTINGS:
            continue
        value = getattr(resolved.args, key)
        if isinstance(value, Path):
            value = str(value)
        source = resolved.sources[key]
        # The file is named once, at the top.
        where = "file" if source.kind == "file" else str(source)
        table[key] = {"value": redact(key, value), "source": where}
    return table


def show_config(args: argparse.Namespace, client: Resolved) -> int:
    sections = list(dict.fromkeys(args.section or SECTIONS))
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        print(
            f"jobsched: config show: no program {unknown[0]!r} (one of {', '.join(SECTIONS)})",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    argv = ["--config", str(client.path)] if client.path is not None else []
    shown: dict[str, Any] = {}
    problems = 0
    for section in sections:
        if section == "client":
            shown[section] = _effective(client)
            continue
        program = _program(section)
        if isinstance(program, str):
            shown[section] = program
            problems += 1
            continue
        try:
            resolved = program.resolve(argv, os.environ)
        except SystemExit:  # the program's parser printed the error (a bad file or variable)
            return EXIT_BAD_INPUT
        shown[section] = _effective(resolved)
    if args.json:
        print(json.dumps({"file": _file(client.path), "sections": shown}, indent=2))
    else:
        print(render(shown, client.path))
    return EXIT_ERROR if problems and len(sections) == 1 else 0


def _file(path: Path | None) -> str | None:
    return None if path is None else str(path)


def render(shown: Mapping[str, Any], path: Path | None) -> str:
    """The tables as TOML, each key's source as a comment after it; unset keys commented out."""
    lines = [
        f"# configuration file: {path}"
        if path is not None
        else f"# no configuration file (--config FILE or ${CONFIG_ENV})"
    ]
    for section, table in shown.items():
        lines += ["", f"[{section}]"]
        if isinstance(table, str):
            lines.append(f"# {table}")
            continue
        width = max((len(f"{k} = {_toml(e['value'])}") for k, e in table.items()), default=0)
        for key, entry in table.items():
            if entry["value"] is None:
                lines.append(f"# {key} (unset)".ljust(width) + f"  # {entry['source']}")
            else:
                lines.append(
                    f"{key} = {_toml(entry['value'])}".ljust(width) + f"  # {entry['source']}"
                )
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))
