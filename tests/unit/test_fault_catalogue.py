"""tests/faults/CASES.md stays true: 26 cases in order, and every test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "faults" / "CASES.md"


def test_every_case_is_listed_and_every_named_test_exists() -> None:
    rows = [line for line in CASES.read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row.split("|")[1]) for row in rows] == list(range(1, 27))
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", CASES.read_text())
    assert named
    for path, function in named:
        source = ROOT / path
        assert source.is_file(), f"CASES.md names {path}, which does not exist"
        if function:
            assert re.search(rf"def {function}\(", source.read_text()), (
                f"CASES.md names {path}::{function}, which does not exist"
            )
