"""User handlers for an executor: `--handlers MODULE[:ATTR]` and the `jobsched.handlers` entry
point group.

`MODULE` alone registers what the module defines: functions marked `@jobsched.handler` and
every `HandlerRegistry` at its top level. `MODULE:ATTR` registers one thing: a registry (all of
its handlers) or a single handler (under its marked type, else the attribute's name). An
installed package advertises handlers with an entry point in the group `jobsched.handlers`
whose value is `MODULE[:ATTR]` in the same sense; every executor loads those.

Anything wrong — a module that does not import, an attribute that is not there or is no
handler, a module without handlers, a job type defined twice, a handler that cannot take one
JobContext — is a `HandlerLoadError` whose one-line message names the module and the reason, and
the executor does not start.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

from executor.handlers import Handler, HandlerRegistry, normalise_type
from jobsched.handlers import job_type_of

ENTRY_POINT_GROUP = "jobsched.handlers"


class HandlerLoadError(Exception):
    """Handlers cannot be loaded; the message is one line naming the module and the reason."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """Where each registered job type came from ("built-in", "myapp.jobs:resize", ...)."""

    origins: dict[str, str]

    def describe(self) -> list[str]:
        return [f"{job_type} ({origin})" for job_type, origin in sorted(self.origins.items())]


def load_handlers(
    registry: HandlerRegistry,
    specs: Sequence[str],
    *,
    entry_points: bool = True,
    origins: dict[str, str] | None = None,
) -> Loaded:
    """Register the handlers of each `MODULE[:ATTR]` in `specs`, then those of the installed
    entry points, into `registry` (whose own handlers count as "built-in")."""
    known = dict(origins or {})
    for job_type in registry.types:
        known.setdefault(job_type, "built-in")
    sources: list[tuple[str, str]] = [(spec, spec) for spec in specs]
    if entry_points:
        for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            sources.append((point.value, f"entry point {point.name} = {point.value}"))
    if sources:
        _importable_from_here()
    for spec, origin in sources:
        for job_type, handler, where in _handlers_of(spec, None if origin == spec else origin):
            name = normalise_type(job_type)
            if name in known:
                if name in registry and registry.get(name) is handler:
                    continue  # the same function reached twice (a module and a registry)
                raise HandlerLoadError(
                    f"job type {name!r} is defined twice: by {known[name]} and by {where}"
                )
            try:
                registry.register(name, handler)
            except (TypeError, ValueError) as exc:
                raise HandlerLoadError(f"{where}: {exc}") from None
            known[name] = where
    return Loaded(known)


def _importable_from_here() -> None:
    """`jobsched executor --handlers myjobs` run in a project's directory finds `myjobs.py`
    there, as `python -m executor` would (the console script's sys.path starts with its bin)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def _split(spec: str) -> tuple[str, str | None]:
    module, sep, attr = spec.strip().partition(":")
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise HandlerLoadError(f"--handlers {spec!r}: expected MODULE or MODULE:ATTR")
    if sep and not all(part.isidentifier() for part in attr.split(".")):
        raise HandlerLoadError(f"--handlers {spec!r}: {attr!r} is not an attribute name")
    return module, attr if sep else None


def _import(module_name: str, origin: str | None) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # anything the module raises while importing
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        where = f" ({origin})" if origin else ""
        raise HandlerLoadError(
            f"cannot import handler module {module_name!r}{where}: {reason}"
        ) from None


def _handlers_of(spec: str, origin: str | None) -> Iterator[tuple[str, Handler, str]]:
    """(job type, handler, where it was defined) of one MODULE[:ATTR]."""
    module_name, attr = _split(spec)
    module = _import(module_name, origin)
    if attr is None:
        found = list(_defined_in(module))
        if not found:
            raise HandlerLoadError(
                f"handler module {module_name!r} defines no handlers: mark functions with "
                '@jobsched.handler("type") or define a HandlerRegistry'
            )
        yield from found
        return
    value: Any = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise HandlerLoadError(
                f"handler module {module_name!r} has no attribute {attr!r}"
            ) from None
    where = f"{module_name}:{attr}"
    if isinstance(value, HandlerRegistry):
        yield from ((t, h, where) for t, h in value.items())
    elif callable(value):
        yield job_type_of(value) or attr.rsplit(".", 1)[-1], value, where
    else:
        raise HandlerLoadError(f"{where} is neither a handler nor a HandlerRegistry: {value!r}")


def _defined_in(module: ModuleType) -> Iterable[tuple[str, Handler, str]]:
    for name, value in vars(module).items():
        if isinstance(value, HandlerRegistry):
            for job_type, handler in value.items():
                yield job_type, handler, f"{module.__name__}:{name}"
        elif callable(value) and getattr(value, "__module__", None) == module.__name__:
            marked = job_type_of(value)
            if marked is not None:
                yield marked, value, f"{module.__name__}:{name}"
