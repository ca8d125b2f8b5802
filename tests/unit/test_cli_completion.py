"""`jobsched completion bash` is a script bash can source, and it completes commands,
subcommands and options of the real parser (asked through bash's own completion variables)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JOBSCHED = str(Path(sys.executable).with_name("jobsched"))


def complete(script: str, *words: str) -> list[str]:
    bash = shutil.which("bash")
    assert bash, "bash is needed to test its completion"
    words_text = " ".join(f"'{w}'" for w in words)
    probe = (
        f"source /dev/stdin; COMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}; "
        '_shtab_jobsched; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        [bash, "-c", probe], input=script, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture(scope="module")
def bash_script() -> str:
    made = subprocess.run(
        [JOBSCHED, "completion", "bash"], capture_output=True, text=True, timeout=30
    )
    assert made.returncode == 0, made.stderr
    return made.stdout


def test_commands_subcommands_and_options_complete(bash_script: str) -> None:
    assert complete(bash_script, "jobsched", "su") == ["submit"]
    assert sorted(complete(bash_script, "jobsched", "queues", "s")) == [
        "set",
        "set-concurrency",
        "show",
    ]
    assert complete(bash_script, "jobsched", "submit", "--pri") == ["--priority"]
    assert "cluster" in complete(bash_script, "jobsched", "")


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_other_shells_get_a_script(shell: str) -> None:
    made = subprocess.run(
        [JOBSCHED, "completion", shell], capture_output=True, text=True, timeout=30
    )
    assert made.returncode == 0, made.stderr
    assert "submit" in made.stdout
