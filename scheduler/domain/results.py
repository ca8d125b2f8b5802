"""The limits on an attempt's outcome (pure): results are stored in the job's row and read back
whole, so they are bounded like payloads (larger output belongs in artifacts); a failure's
message (an executor sends a handler's traceback with it) is clipped to a length a row and a
terminal can hold."""

from __future__ import annotations

from scheduler.domain.validation import MAX_PAYLOAD_BYTES

MAX_RESULT_BYTES = MAX_PAYLOAD_BYTES  # 1 MiB, like a payload


def oversized_result(result: bytes) -> str | None:
    """Why `result` is refused (its size and the limit), or None when it fits."""
    if len(result) <= MAX_RESULT_BYTES:
        return None
    return (
        f"result is {len(result)} bytes; at most {MAX_RESULT_BYTES} are allowed "
        "(store larger output as an artifact and return a reference)"
    )


# A failure's message as stored (jobs.last_error and the event's reason): its head (the
# exception) and its tail (the innermost frames) are what matter.
MAX_ERROR_CHARS = 16_384
_ERROR_HEAD = 2_048


def clip_error(message: str) -> str:
    """`message`, or its head and tail with what was cut in between when it is too long."""
    if len(message) <= MAX_ERROR_CHARS:
        return message
    cut = len(message) - MAX_ERROR_CHARS
    tail = MAX_ERROR_CHARS - _ERROR_HEAD
    return f"{message[:_ERROR_HEAD]}\n... ({cut} characters cut) ...\n{message[-tail:]}"
