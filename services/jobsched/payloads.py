"""The one rule for turning Python values into job payloads and results (bytes on the wire)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def encode(value: bytes | str | Mapping[str, Any] | list[Any] | None) -> bytes:
    """None -> empty, bytes as they are, str as UTF-8, mappings and lists as compact JSON."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, Mapping):
        value = dict(value)
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str).encode()
    raise TypeError(f"{type(value).__name__} is not bytes, str, a dict, a list or None")
