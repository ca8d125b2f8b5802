"""Bytes that may or may not be the request message, sent to every RPC with identity
serializers (to client streams also after a well-formed first message): never UNKNOWN/INTERNAL,
a refusal writes nothing, the server keeps serving."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz.calls import call, methods, path
from tests.fuzz.conftest import Fuzz
from tests.fuzz.invariants import check
from tests.fuzz.requests import PLAUSIBLE
from tests.fuzz.test_fuzzed_requests import EXAMPLES, FUZZ_SETTINGS

GARBAGE_SETTINGS = settings(FUZZ_SETTINGS, max_examples=max(1, EXAMPLES // 2))

# Corrupt protobuf of the kinds a decoder trips over, and any bytes at all.
GARBAGE = st.one_of(
    st.sampled_from(
        [
            b"\xff\xff\xff\xff",
            b"\x0a\xff\xff\xff\xff\x0f",  # length past the end
            b"\x0a\x02\xff\xfe",  # field 1 as invalid UTF-8
            b"\x08" + b"\xff" * 10,  # a varint longer than 64 bits
            b"\x0b",  # start group
            b"\x00",  # field number 0
        ]
    ),
    st.binary(min_size=1, max_size=64),
)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", methods(), ids=path)
@GARBAGE_SETTINGS
@given(data=st.data())
async def test_garbage_bytes_are_refused_cleanly(
    fuzz: Fuzz, method: MethodDescriptor, data: st.DataObject
) -> None:
    if method.client_streaming:
        # Garbage first, or after a plausible first message (a Register, an upload's header).
        opening = PLAUSIBLE[path(method)](fuzz.world).map(lambda stream: [stream[0]])
        first = data.draw(st.one_of(st.just([]), opening), label="first")
        garbage = data.draw(st.lists(GARBAGE, min_size=1, max_size=3), label="garbage")
        body: object = [m.SerializeToString() for m in first] + garbage
    else:
        body = data.draw(GARBAGE, label="body")
    before = await fuzz.snapshots.take()
    fuzz.access.ended.clear()
    await check(fuzz, method, await call(fuzz.channel, method, body, raw=True), before)
