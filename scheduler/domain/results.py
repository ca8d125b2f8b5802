"""The limit on an attempt's result (pure): results are stored in the job's row and read back
whole, so they are bounded like payloads; larger output belongs in artifacts."""

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
