"""The one encoding rule shared by client payloads and executor results."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

from jobsched import payloads


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, b""),
        (b"\x00raw", b"\x00raw"),
        ("héllo", "héllo".encode()),
        ({"a": 1, "b": [1, 2]}, b'{"a":1,"b":[1,2]}'),
        (OrderedDict(x="y"), b'{"x":"y"}'),
        ([1, "two"], b'[1,"two"]'),
    ],
)
def test_encode(value: Any, encoded: bytes) -> None:
    assert payloads.encode(value) == encoded


def test_other_types_are_refused() -> None:
    with pytest.raises(TypeError, match="int"):
        payloads.encode(42)  # type: ignore[arg-type]
