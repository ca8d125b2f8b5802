"""One request strategy per RPC, keyed by the method's full path ("/jobsched.v1.JobService/
SubmitJob"). `test_every_rpc_has_a_strategy` reads the services from the generated descriptors
and fails for a method missing here (or one here that no longer exists).

Each strategy mixes three kinds of request: plausible ones built from the `World` (ids, names
and types that exist in the fuzz database, so that the happy path and its state checks run too),
the same with one field overwritten by any value of its type (`messages.mutated`), and any
message of the request type (`messages.arbitrary`). Client-streaming and bidirectional methods
draw a list of messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import strategies as st

from jobsched.v1 import (
    artifact_service_pb2 as artifacts,
)
from jobsched.v1 import audit_service_pb2 as audit
from jobsched.v1 import (
    auth_service_pb2 as auth,
)
from jobsched.v1 import (
    cluster_service_pb2 as cluster,
)
from jobsched.v1 import (
    executor_service_pb2 as executor,
)
from jobsched.v1 import (
    job_pb2,
)
from jobsched.v1 import (
    job_service_pb2 as jobs,
)
from jobsched.v1 import (
    job_type_service_pb2 as job_types,
)
from jobsched.v1 import (
    queue_service_pb2 as queues,
)
from jobsched.v1 import (
    schedule_service_pb2 as schedules,
)
from tests.fuzz.messages import arbitrary, mutated, text

# No job of the world has this type: fuzzed executors claim nothing (see `connect`).
NO_SUCH_TYPE = "nothing-runs-this"
TYPES = ["work", "Work", "email", "report.daily"]
QUEUES = ["", "default", "emails", "Emails"]


@dataclass
class World:
    """What exists in the fuzz database before the first example (tests/fuzz/conftest.py)."""

    now: datetime
    job_ids: list[str] = field(default_factory=list)
    schedule_ids: list[str] = field(default_factory=list)
    api_key_ids: list[str] = field(default_factory=list)


def one_of_or_any(known: list[str]) -> st.SearchStrategy[str]:
    """A known value (most of the time), a fresh UUID, or any text."""
    choices: list[st.SearchStrategy[str]] = [st.uuids().map(str), text()]
    if known:
        choices.insert(0, st.sampled_from(known))
    return st.one_of(*choices)


def timestamp(world: World) -> st.SearchStrategy[Timestamp]:
    def at(seconds: int) -> Timestamp:
        stamp = Timestamp()
        stamp.FromDatetime(world.now + timedelta(seconds=seconds))
        return stamp

    return st.integers(-86_400, 400 * 86_400).map(at)


def duration(max_seconds: int = 86_400) -> st.SearchStrategy[Duration]:
    return st.integers(0, max_seconds).map(lambda s: Duration(seconds=s))


def retry_policy() -> st.SearchStrategy[job_pb2.RetryPolicy]:
    return st.builds(
        job_pb2.RetryPolicy,
        initial_backoff=duration(60),
        backoff_multiplier=st.floats(1.0, 5.0),
        max_backoff=duration(3600),
        jitter=st.floats(0.0, 1.0),
    )


def job_spec(world: World) -> st.SearchStrategy[job_pb2.JobSpec]:
    return st.builds(
        job_pb2.JobSpec,
        type=st.sampled_from(TYPES),
        queue=st.sampled_from(QUEUES),
        payload=st.binary(max_size=64),
        priority=st.integers(0, 100),
        max_attempts=st.integers(1, 10),
        run_at=st.one_of(st.none(), timestamp(world)),
        labels=st.dictionaries(st.sampled_from(["team", "env"]), st.text(max_size=8), max_size=2),
        idempotency_key=st.one_of(st.just(""), st.sampled_from(["k1", "k2", "k3"])),
        timeout=st.one_of(st.none(), duration(3600)),
        retry_policy=st.one_of(st.none(), retry_policy()),
        depends_on=st.lists(one_of_or_any(world.job_ids), max_size=2),
    )


def states() -> st.SearchStrategy[list[int]]:
    return st.lists(st.sampled_from(job_pb2.JobState.values()), max_size=3)


def page(cls: type[Message], **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        cls, page_size=st.integers(0, 50), page_token=st.sampled_from(["", "abc"]), **fields
    )


def schedule(world: World) -> st.SearchStrategy[schedules.Schedule]:
    return st.builds(
        schedules.Schedule,
        name=st.sampled_from(["nightly", "hourly", "Nightly"]),
        cron=st.sampled_from(["0 2 * * *", "*/5 * * * *", "@hourly", "61 * * * *"]),
        time_zone=st.sampled_from(["", "UTC", "Europe/Paris"]),
        job_template=job_spec(world).map(_without_dependencies),
        overlap_policy=st.sampled_from(schedules.OverlapPolicy.values()),
        catchup_policy=st.sampled_from(schedules.CatchupPolicy.values()),
        paused=st.booleans(),
    )


def _without_dependencies(spec: job_pb2.JobSpec) -> job_pb2.JobSpec:
    spec.ClearField("depends_on")
    return spec


def mask(*paths: str) -> st.SearchStrategy[FieldMask]:
    return st.lists(st.sampled_from(paths), max_size=3, unique=True).map(
        lambda chosen: FieldMask(paths=chosen)
    )


def upload(world: World) -> st.SearchStrategy[list[artifacts.UploadArtifactRequest]]:
    header = st.builds(
        artifacts.UploadArtifactHeader,
        job_id=one_of_or_any(world.job_ids),
        attempt=st.integers(0, 3),
        executor=st.sampled_from(["exec-a", ""]),
        session_token=st.sampled_from(["", "s.t"]),
        name=st.sampled_from(["out.txt", "../etc/passwd", ""]),
    )
    first = header.map(lambda h: artifacts.UploadArtifactRequest(header=h))
    chunk = st.binary(max_size=64).map(lambda b: artifacts.UploadArtifactRequest(chunk=b))
    finish = st.just(
        artifacts.UploadArtifactRequest(finish=artifacts.UploadArtifactFinish(sha256="0" * 64))
    )
    rest = st.lists(st.one_of(chunk, finish, arbitrary(artifacts.UploadArtifactRequest.DESCRIPTOR)))
    return st.tuples(first, rest).map(lambda t: [t[0], *t[1]])  # type: ignore[list-item]


def connect(world: World) -> st.SearchStrategy[list[executor.ConnectRequest]]:
    register = st.builds(
        executor.Register,
        name=st.uuids().map(lambda u: f"fuzz-{u.hex[:8]}"),
        capacity=st.integers(-1, 4),
        queues=st.lists(st.sampled_from(["no-such-queue", "Q"]), max_size=2),
        in_flight=st.lists(
            st.builds(executor.JobAttempt, job_id=one_of_or_any(world.job_ids)), max_size=2
        ),
        session_token=st.sampled_from(["", "forged.token"]),
    )
    first = register.map(lambda r: executor.ConnectRequest(register=r))
    rest = st.lists(arbitrary(executor.ConnectRequest.DESCRIPTOR), max_size=5)
    return st.tuples(st.one_of(first, mutated(first)), rest).map(_claiming_nothing)


def _claiming_nothing(messages: tuple[Any, list[Any]]) -> list[executor.ConnectRequest]:
    """The stream, with every Register limited to a job type no job has: a fuzzed executor must
    not claim the world's jobs, whose revert after the stream ends would be a write the next
    example's refusal could be blamed for (the rogue-executor tests run real work instead)."""
    stream = [messages[0], *messages[1]]
    for message in stream:
        if message.WhichOneof("message") == "register":
            message.register.ClearField("job_types")
            message.register.job_types.append(NO_SUCH_TYPE)
    return stream


# Plausible requests per method; `strategy_for` adds the mutated and arbitrary ones.
PLAUSIBLE: dict[str, Callable[[World], st.SearchStrategy[Any]]] = {
    "/jobsched.v1.JobService/SubmitJob": lambda w: st.builds(
        jobs.SubmitJobRequest, job=job_spec(w)
    ),
    "/jobsched.v1.JobService/SubmitJobs": lambda w: st.builds(
        jobs.SubmitJobsRequest, jobs=st.lists(job_spec(w), max_size=3)
    ),
    "/jobsched.v1.JobService/GetJobStatus": lambda w: st.builds(
        jobs.GetJobStatusRequest, id=one_of_or_any(w.job_ids), include_events=st.booleans()
    ),
    "/jobsched.v1.JobService/ListActiveJobs": lambda w: page(
        jobs.ListActiveJobsRequest,
        queue=st.sampled_from(QUEUES),
        type=st.sampled_from(["", *TYPES]),
        states=states(),
    ),
    "/jobsched.v1.JobService/GetJobHistory": lambda w: page(
        jobs.GetJobHistoryRequest,
        queue=st.sampled_from(QUEUES),
        states=states(),
        finish_time_after=st.one_of(st.none(), timestamp(w)),
        finish_time_before=st.one_of(st.none(), timestamp(w)),
    ),
    "/jobsched.v1.JobService/WatchJob": lambda w: st.builds(
        jobs.WatchJobRequest, id=one_of_or_any(w.job_ids), after_sequence=st.integers(0, 5)
    ),
    "/jobsched.v1.JobService/WatchJobs": lambda w: st.builds(
        jobs.WatchJobsRequest, queue=st.sampled_from(QUEUES), states=states()
    ),
    "/jobsched.v1.JobService/ListJobLogs": lambda w: st.builds(
        jobs.ListJobLogsRequest,
        id=one_of_or_any(w.job_ids),
        attempt=st.integers(0, 3),
        page_size=st.integers(0, 50),
    ),
    "/jobsched.v1.JobService/CancelJob": lambda w: st.builds(
        jobs.CancelJobRequest, id=one_of_or_any(w.job_ids), reason=st.text(max_size=20)
    ),
    "/jobsched.v1.JobService/RetryJob": lambda w: st.builds(
        jobs.RetryJobRequest, id=one_of_or_any(w.job_ids)
    ),
    "/jobsched.v1.JobService/RetryJobs": lambda w: st.builds(
        jobs.RetryJobsRequest,
        queue=st.sampled_from(QUEUES),
        states=states(),
        limit=st.integers(0, 10),
    ),
    "/jobsched.v1.JobService/DeleteJob": lambda w: st.builds(
        jobs.DeleteJobRequest, id=one_of_or_any(w.job_ids)
    ),
    "/jobsched.v1.JobService/UpdateJobPriority": lambda w: st.builds(
        jobs.UpdateJobPriorityRequest, id=one_of_or_any(w.job_ids), priority=st.integers(0, 100)
    ),
    "/jobsched.v1.QueueService/GetQueue": lambda w: st.builds(
        queues.GetQueueRequest, name=st.sampled_from(QUEUES)
    ),
    "/jobsched.v1.QueueService/UpdateQueue": lambda w: st.builds(
        queues.UpdateQueueRequest,
        queue=st.builds(
            queues.Queue,
            name=st.sampled_from(QUEUES),
            default_max_attempts=st.integers(1, 10),
            default_timeout=duration(3600),
            max_concurrency=st.integers(0, 10),
            retention=duration(86_400 * 30),
            default_retry_policy=retry_policy(),
        ),
        update_mask=mask(
            "default_max_attempts",
            "default_timeout",
            "max_concurrency",
            "retention",
            "default_retry_policy",
            "paused",
        ),
    ),
    "/jobsched.v1.QueueService/ListQueues": lambda w: st.just(queues.ListQueuesRequest()),
    "/jobsched.v1.QueueService/PauseQueue": lambda w: st.builds(
        queues.PauseQueueRequest, name=st.sampled_from(QUEUES)
    ),
    "/jobsched.v1.QueueService/ResumeQueue": lambda w: st.builds(
        queues.ResumeQueueRequest, name=st.sampled_from(QUEUES)
    ),
    "/jobsched.v1.ScheduleService/CreateSchedule": lambda w: st.builds(
        schedules.CreateScheduleRequest, schedule=schedule(w)
    ),
    "/jobsched.v1.ScheduleService/GetSchedule": lambda w: st.builds(
        schedules.GetScheduleRequest, id=one_of_or_any(w.schedule_ids)
    ),
    "/jobsched.v1.ScheduleService/ListSchedules": lambda w: page(schedules.ListSchedulesRequest),
    "/jobsched.v1.ScheduleService/PauseSchedule": lambda w: st.builds(
        schedules.PauseScheduleRequest, id=one_of_or_any(w.schedule_ids)
    ),
    "/jobsched.v1.ScheduleService/ResumeSchedule": lambda w: st.builds(
        schedules.ResumeScheduleRequest, id=one_of_or_any(w.schedule_ids)
    ),
    "/jobsched.v1.ScheduleService/DeleteSchedule": lambda w: st.builds(
        schedules.DeleteScheduleRequest, id=one_of_or_any(w.schedule_ids)
    ),
    "/jobsched.v1.ScheduleService/TriggerSchedule": lambda w: st.builds(
        schedules.TriggerScheduleRequest, id=one_of_or_any(w.schedule_ids)
    ),
    "/jobsched.v1.JobTypeService/GetJobType": lambda w: st.builds(
        job_types.GetJobTypeRequest, name=st.sampled_from(TYPES)
    ),
    "/jobsched.v1.JobTypeService/ListJobTypes": lambda w: page(job_types.ListJobTypesRequest),
    "/jobsched.v1.JobTypeService/UpdateJobType": lambda w: st.builds(
        job_types.UpdateJobTypeRequest,
        job_type=st.builds(
            job_types.JobType,
            name=st.sampled_from(TYPES),
            max_attempts=st.integers(1, 10),
            timeout=duration(3600),
            retry_policy=retry_policy(),
        ),
        update_mask=mask("max_attempts", "timeout", "retry_policy"),
    ),
    "/jobsched.v1.ClusterService/GetClusterStatus": lambda w: st.just(
        cluster.GetClusterStatusRequest()
    ),
    "/jobsched.v1.AuthService/CreateApiKey": lambda w: st.builds(
        auth.CreateApiKeyRequest,
        name=st.sampled_from(["ci", "dashboard"]),
        role=st.sampled_from(["viewer", "submitter", "operator", "admin", "executor", "root"]),
        tenants=st.lists(st.sampled_from(["default", "*", "acme"]), max_size=2),
        ttl=st.one_of(st.none(), duration(86_400 * 30)),
    ),
    "/jobsched.v1.AuthService/ListApiKeys": lambda w: page(auth.ListApiKeysRequest),
    "/jobsched.v1.AuditService/ListAuditEvents": lambda w: page(
        audit.ListAuditEventsRequest,
        principal=st.sampled_from(["", "anonymous", "api_key:x"]),
        action=st.sampled_from(["", "CancelJob"]),
        target=st.text(max_size=20),
    ),
    "/jobsched.v1.AuthService/RevokeApiKey": lambda w: st.builds(
        auth.RevokeApiKeyRequest, id=one_of_or_any(w.api_key_ids)
    ),
    "/jobsched.v1.ArtifactService/UploadArtifact": upload,
    "/jobsched.v1.ArtifactService/ListJobArtifacts": lambda w: st.builds(
        artifacts.ListJobArtifactsRequest, job_id=one_of_or_any(w.job_ids)
    ),
    "/jobsched.v1.ArtifactService/GetArtifact": lambda w: st.builds(
        artifacts.GetArtifactRequest,
        job_id=one_of_or_any(w.job_ids),
        name=st.sampled_from(["out.txt", ""]),
    ),
    "/jobsched.v1.ExecutorService/Connect": connect,
}


def strategy_for(method: str, input_type: Any, world: World, streaming: bool) -> Any:
    """Plausible, mutated and arbitrary requests of one method (lists for client streams)."""
    plausible = PLAUSIBLE[method](world)
    if streaming:  # the stream's own strategy mixes arbitrary messages in already
        return plausible
    return st.one_of(plausible, mutated(plausible), arbitrary(input_type))
