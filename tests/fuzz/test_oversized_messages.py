"""A message over the server's receive limit (scheduler.server.MAX_MESSAGE_BYTES) is refused
RESOURCE_EXHAUSTED, as a unary request, in a client stream and on the executor stream, writes
nothing, and the server keeps serving."""

from __future__ import annotations

import pytest

from scheduler.server import MAX_MESSAGE_BYTES
from tests.fuzz.calls import call, methods, path
from tests.fuzz.conftest import Fuzz
from tests.fuzz.invariants import healthy
from tests.fuzz.snapshot import changed

OVERSIZED = [
    "/jobsched.v1.JobService/SubmitJobs",
    "/jobsched.v1.ArtifactService/UploadArtifact",
    "/jobsched.v1.ExecutorService/Connect",
]


@pytest.mark.parametrize("name", OVERSIZED)
async def test_a_message_over_the_limit_is_resource_exhausted(fuzz: Fuzz, name: str) -> None:
    (method,) = [m for m in methods() if path(m) == name]
    # Field 1 (a repeated JobSpec / the header / the Register), length-delimited: a well-formed
    # start, so that only its size is wrong.
    body = b"\x0a" + _varint(MAX_MESSAGE_BYTES) + b"\x00" * MAX_MESSAGE_BYTES
    before = await fuzz.snapshots.take()
    outcome = await call(
        fuzz.channel, method, [body] if method.client_streaming else body, raw=True
    )
    assert outcome.code.name == "RESOURCE_EXHAUSTED", f"{outcome.code}: {outcome.details}"
    assert changed(before, await fuzz.snapshots.take()) == []
    await healthy(fuzz)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
