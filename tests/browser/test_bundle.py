"""The jobs page's first-load JavaScript stays within the issue's budget: 250 kB gzipped, counted
as `make dashboard` reports it (every script the exported page loads, each gzipped)."""

from __future__ import annotations

import gzip
import re

from dashboard.app import STATIC

BUDGET_KB = 250


def test_the_jobs_page_first_load_javascript_is_within_250_kb_gzipped(built: None) -> None:
    html = (STATIC / "jobs" / "index.html").read_text()
    files = sorted(set(re.findall(r"/_next/static/[^\"]+?\.js", html)))
    assert files, "the jobs page loads no script: is the export right?"
    total = sum(len(gzip.compress((STATIC / f.lstrip("/")).read_bytes())) for f in files)
    assert total / 1000 <= BUDGET_KB, f"{total / 1000:.1f} kB gzipped in {len(files)} files"
