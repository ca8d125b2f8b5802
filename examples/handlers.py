"""Example handlers: run them with

    jobsched executor --handlers examples.handlers      # from the checkout's top directory
    jobsched submit --type resize --payload '{"width": 640, "height": 480, "scale": 0.5}' --watch
    jobsched submit --type checksum --payload '{"text": "hello"}' --watch

`resize` is an `async def` (it runs on the executor's event loop: never block it), `checksum` a
plain `def` (it runs in the executor's thread pool, one thread per slot). Both get a JobContext:
`ctx.json()` is the payload decoded, `ctx.progress(...)` and `ctx.log(...)` report back, and
`ctx.cancelled` is set when the job is cancelled or times out. What a handler returns is the
job's result (a dict becomes JSON); raising RetryableError or any exception fails the attempt
(retried while attempts remain), NonRetryableError ends the job DEAD at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import jobsched
from executor.handlers import JobContext, NonRetryableError


@jobsched.handler("resize")
async def resize(ctx: JobContext) -> dict[str, Any]:
    params = ctx.json() or {}
    try:
        width, height = int(params["width"]), int(params["height"])
        scale = float(params.get("scale", 0.5))
    except (KeyError, TypeError, ValueError) as exc:
        raise NonRetryableError(f"payload needs width and height: {exc}") from None
    steps = 4
    for step in range(1, steps + 1):
        ctx.raise_if_cancelled()
        await asyncio.sleep(0.05)  # the real work would go here
        ctx.progress(100 * step / steps, step=f"pass {step} of {steps}")
    ctx.log(f"resized {width}x{height} by {scale}")
    return {"width": round(width * scale), "height": round(height * scale)}


@jobsched.handler
def checksum(ctx: JobContext) -> dict[str, str]:
    """A plain function: blocking work is fine here (it has a thread of its own)."""
    text = (ctx.json() or {}).get("text", "")
    digest = hashlib.sha256(str(text).encode()).hexdigest()
    ctx.log(f"sha256 of {len(str(text))} characters")
    return {"sha256": digest}
