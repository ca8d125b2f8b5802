"""The CLI's argument types: what they accept, and that everything else is one argparse error
(ArgumentTypeError), never an exception that would print a traceback."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest

from jobsched.cli.arguments import duration_arg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.5", timedelta(seconds=1.5)),
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        (" 0 ", timedelta(0)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert duration_arg(text) == expected


@pytest.mark.parametrize("text", ["-1", "soon", "", "inf", "nan", "-inf", "1e300d", "5x"])
def test_what_is_not_a_duration_is_an_argument_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        duration_arg(text)
