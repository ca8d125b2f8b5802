"""What the signed-in key may do, so that the UI can hide the actions it lacks.

The public API has no "who am I" call, so each permission is probed with a request that is
invalid by construction (an empty job type, job id, queue or schedule name): the
scheduler's auth interceptor decides before the servicer validates, so PERMISSION_DENIED means
the permission is missing and INVALID_ARGUMENT (or NOT_FOUND) means it is held. Nothing is
written either way. The UI only hides buttons: the scheduler still refuses whatever the key
lacks, whatever the browser sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from jobsched.async_client import AsyncClient
from jobsched.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError

READ = "jobs.read"
SUBMIT = "jobs.submit"
OPERATE = "jobs.operate"
MANAGE_QUEUES = "queues.manage"
MANAGE_SCHEDULES = "schedules.manage"
READ_CLUSTER = "cluster.read"


async def _held(probe: Callable[[], Awaitable[Any]]) -> bool:
    try:
        await probe()
    except (InvalidArgumentError, NotFoundError):
        return True
    except PermissionDeniedError:
        return False
    return True


async def permissions(client: AsyncClient) -> frozenset[str]:
    """The permissions of the client's credential. Raises UnauthenticatedError (and any error
    of the first call) when the key is not usable at all."""
    raw = client.raw
    await raw.queues()  # READ, and proof that the credential is accepted
    probes: dict[str, Callable[[], Awaitable[Any]]] = {
        SUBMIT: lambda: raw.submit_job({"type": ""}),
        OPERATE: lambda: raw.cancel(""),
        MANAGE_QUEUES: lambda: raw.pause_queue(""),
        MANAGE_SCHEDULES: lambda: raw.pause_schedule(""),
        READ_CLUSTER: raw.cluster_status,
    }
    held = await asyncio.gather(*(_held(probe) for probe in probes.values()))
    return frozenset({READ, *(name for name, ok in zip(probes, held, strict=True) if ok)})
