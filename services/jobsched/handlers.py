"""`@jobsched.handler`: marks a function as the handler of a job type, for an executor started
with `--handlers MODULE` (executor/loading.py) to find.

The decorator only marks the function (it returns it unchanged and imports nothing of the
executor), so a module of handlers can be imported anywhere, tested by calling its functions,
and loaded by any number of executors.

    import jobsched

    @jobsched.handler("resize")
    async def resize(ctx):
        params = ctx.json()
        ...
        return {"width": 640}

    @jobsched.handler            # the job type is the function's name: "thumbnail"
    def thumbnail(ctx): ...      # a plain def runs in the executor's thread pool
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

# The attribute that carries the job type on a decorated function.
JOB_TYPE_ATTRIBUTE = "__jobsched_job_type__"

F = TypeVar("F", bound=Callable[..., Any])


@overload
def handler(job_type: str) -> Callable[[F], F]: ...


@overload
def handler(job_type: F) -> F: ...


def handler(job_type: str | F) -> Callable[[F], F] | F:
    """Mark a function as the handler of `job_type` (default: the function's name)."""
    if callable(job_type):
        return _mark(job_type, getattr(job_type, "__name__", ""))
    if not isinstance(job_type, str) or not job_type.strip():
        raise TypeError(f"@jobsched.handler takes a job type name, not {job_type!r}")
    name = job_type

    def decorate(fn: F) -> F:
        return _mark(fn, name)

    return decorate


def _mark(fn: F, job_type: str) -> F:
    setattr(fn, JOB_TYPE_ATTRIBUTE, job_type)
    return fn


def job_type_of(value: object) -> str | None:
    """The job type a function was marked with, or None."""
    marked = getattr(value, JOB_TYPE_ATTRIBUTE, None)
    return marked if isinstance(marked, str) else None
