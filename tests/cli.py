"""Running the `jobsched` CLI as a subprocess against a test scheduler."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

JOBSCHED = str(Path(sys.executable).with_name("jobsched"))


async def run_cli(address: str, *args: str) -> tuple[int, str, str]:
    """`jobsched --address ADDRESS ARGS...`: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        JOBSCHED,
        "--address",
        address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},  # tables are not wrapped
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def cli_ok(address: str, *args: str) -> str:
    """The stdout of a command that must exit 0 (its stderr in the failure message)."""
    code, out, err = await run_cli(address, *args)
    assert code == 0, f"exit {code}; stderr:\n{err}"
    return out
