"""`jobsched completion bash|zsh|tcsh`: a shell completion script for every command and option,
generated from the parser itself by shtab, so it cannot fall behind the commands.

    eval "$(jobsched completion bash)"            # this shell
    jobsched completion bash > /etc/bash_completion.d/jobsched
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

SHELLS = ("bash", "zsh", "tcsh")


def add_commands(commands: Any, build_parser: Callable[[], argparse.ArgumentParser]) -> None:
    """Add `jobsched completion SHELL` (`build_parser` makes the parser to complete)."""
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, tcsh)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", choices=SHELLS)

    def show(args: argparse.Namespace, _resolved: object) -> int:
        import shtab  # only for this command

        print(shtab.complete(build_parser(), shell=args.shell, root_prefix="jobsched"))
        return 0

    completion.set_defaults(local=show)
