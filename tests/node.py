"""Running the Node.js side (clients/typescript, examples/node-executor) from pytest: the
package's dependencies come from `make node-deps` (npm ci of the committed package-lock.json),
which `make test` runs first; a test without them fails saying so."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TS_CLIENT = ROOT / "clients" / "typescript"


def node_tools() -> tuple[str, str]:
    """The node and npm executables, or a failure saying how to get them."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise AssertionError("node and npm are needed (Node.js >= 20): apt-get install nodejs npm")
    if not (TS_CLIENT / "node_modules" / "@bufbuild" / "protobuf").is_dir():
        raise AssertionError(
            f"{TS_CLIENT}/node_modules is missing: run `make node-deps` (npm ci) first"
        )
    return node, npm


async def run(*argv: str, cwd: Path, env: dict[str, str], within: float = 120.0) -> tuple[int, str]:
    """Run a command to its end; (exit code, stdout and stderr together)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        return -1, output.decode(errors="replace") + f"\n[killed after {within:g} s]"
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")
