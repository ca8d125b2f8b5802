"""Generated requests for every RPC against a real scheduler (tests/fuzz/requests.py): no call
ever answers UNKNOWN, INTERNAL, UNIMPLEMENTED or DATA_LOSS, or hangs; a refused call changes no
row of any table (tests/fuzz/snapshot.py); and the server answers its health check after every
example."""

from __future__ import annotations

import os

import pytest
from google.protobuf.descriptor import MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobsched.v1 import job_service_pb2, job_service_pb2_grpc
from tests.fuzz.calls import call, methods, path, services
from tests.fuzz.conftest import Fuzz
from tests.fuzz.invariants import check
from tests.fuzz.requests import PLAUSIBLE, strategy_for
from tests.fuzz.snapshot import changed

# Per method: 35 methods in ~30 s on the shared 2-core machine. A longer hunt, by hand:
# JOBSCHED_FUZZ_EXAMPLES=500 JOBSCHED_FUZZ_RANDOM=1 pytest tests/fuzz
EXAMPLES = int(os.environ.get("JOBSCHED_FUZZ_EXAMPLES", "30"))

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The same examples on every run (CI is repeatable), unless asked for new ones.
    derandomize=os.environ.get("JOBSCHED_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


async def test_the_snapshot_sees_a_write(fuzz: Fuzz) -> None:
    """The checksum the refusals are held to does change when a call writes."""
    jobs = job_service_pb2_grpc.JobServiceStub(fuzz.channel)
    before = await fuzz.snapshots.take()
    await jobs.UpdateJobPriority(
        job_service_pb2.UpdateJobPriorityRequest(id=fuzz.world.job_ids[0], priority=99)
    )
    diff = changed(before, await fuzz.snapshots.take())
    assert [entry for entry in diff if entry.startswith("jobs:")] == ["jobs: 6 -> 6 rows"], diff


def test_every_rpc_has_a_strategy() -> None:
    """The services come from the generated descriptors: a new RPC fails here until
    tests/fuzz/requests.py has a strategy for it."""
    assert {s.name for s in services()} >= {
        "JobService",
        "QueueService",
        "ScheduleService",
        "JobTypeService",
        "ClusterService",
        "AuthService",
        "AuditService",
        "ArtifactService",
        "ExecutorService",
    }
    declared = {path(m) for m in methods()}
    missing = sorted(declared - PLAUSIBLE.keys())
    assert not missing, f"RPCs without a fuzz strategy in tests/fuzz/requests.py: {missing}"
    stale = sorted(PLAUSIBLE.keys() - declared)
    assert not stale, f"strategies for RPCs that no longer exist: {stale}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", methods(), ids=path)
@FUZZ_SETTINGS
@given(data=st.data())
async def test_fuzzed_requests_are_answered_and_refusals_write_nothing(
    fuzz: Fuzz, method: MethodDescriptor, data: st.DataObject
) -> None:
    name = path(method)
    if name not in PLAUSIBLE:
        pytest.fail(f"no fuzz strategy for {name} (see test_every_rpc_has_a_strategy)")
    request = data.draw(
        strategy_for(name, method.input_type, fuzz.world, method.client_streaming),
        label="request",
    )
    before = await fuzz.snapshots.take()
    fuzz.access.ended.clear()
    await check(fuzz, method, await call(fuzz.channel, method, request), before)
