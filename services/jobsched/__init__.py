"""jobsched: the shared package — generated stubs (`jobsched.v1`), the client SDK and the CLI.

`jobsched.handler` marks handler functions for `jobsched executor --handlers MODULE`;
`jobsched.Client` (synchronous, jobsched/sync_client.py) and `jobsched.AsyncClient` (asyncio,
jobsched/async_client.py) speak in Python objects; `jobsched.client.JobschedClient` is the
protobuf-level async client under both.
"""

from typing import Any

from jobsched.handlers import handler

__all__ = ["AsyncClient", "Client", "JobFailedError", "JobState", "handler"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import jobsched` in a handler module stays light.
    if name == "Client":
        from jobsched.sync_client import Client

        return Client
    if name == "AsyncClient":
        from jobsched.async_client import AsyncClient

        return AsyncClient
    if name in {"JobFailedError", "JobState", "Job"}:
        from jobsched import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'jobsched' has no attribute {name!r}")
