"""What every fuzzed call must satisfy, checked after it (tests/fuzz/test_*.py)."""

from __future__ import annotations

from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fuzz.calls import FORBIDDEN, Outcome, path
from tests.fuzz.conftest import Fuzz
from tests.fuzz.snapshot import changed

FORBIDDEN_NAMES = frozenset(code.name for code in FORBIDDEN)
# Even accepted, a fuzzed executor stream writes nothing: it registers for a job type no job has
# (tests/fuzz/requests.py), so whatever it reports is about attempts it was never given.
GIVEN_NOTHING = frozenset({"/jobsched.v1.ExecutorService/Connect"})


async def healthy(fuzz: Fuzz) -> None:
    health = health_pb2_grpc.HealthStub(fuzz.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def check(
    fuzz: Fuzz, method: MethodDescriptor, outcome: Outcome, before: dict[str, tuple[int, str]]
) -> None:
    """No forbidden code (as the client saw it, and as the server logged it), no hang, no write
    on a refusal, the server still healthy."""
    name = path(method)
    served = await fuzz.access.code_of(name)
    assert served not in FORBIDDEN_NAMES, f"{name}: the server logged {served}"
    if not outcome.send_race:
        assert outcome.code not in FORBIDDEN, f"{name} answered {outcome.code}: {outcome.details}"
    assert outcome.code.name != "DEADLINE_EXCEEDED", f"{name} hung: {outcome.details}"
    if outcome.refused or name in GIVEN_NOTHING:
        diff = changed(before, await fuzz.snapshots.take())
        assert not diff, f"{name} refused ({outcome.code}: {outcome.details}) but wrote: {diff}"
    await healthy(fuzz)
