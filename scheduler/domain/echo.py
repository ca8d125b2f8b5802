"""How error messages quote what a client sent: never unbounded.

A violation that repeats its input verbatim grows with the input, and gRPC carries the message
and the rich status in the trailing metadata, whose limit (8 KiB by default on the client) turns
an over-long status into RESOURCE_EXHAUSTED "Stream removed" instead of the error meant. So
every value an error echoes goes through `echo`, and `InvalidArgument` lists at most
MAX_VIOLATIONS violations (scheduler/domain/errors.py).
"""

from __future__ import annotations

ECHO_CHARS = 100  # a name (64), a job id, a time zone, most cron expressions fit whole


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """`repr(value)` of a string, shortened to its first `limit` characters plus how long it was:
    `'xxxx'... (100000 characters)`. Other values are echoed as `repr` of their text form."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying how many were left off."""
    if len(text) <= limit:
        return text
    suffix = f"... ({len(text) - limit} more characters)"
    return text[: max(0, limit - len(suffix))] + suffix
