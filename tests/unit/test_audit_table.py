"""The audit table covers every RPC of every jobsched.v1 service, and records every call of
every one that changes something (all but reads, submits and the executor's calls); targets
come from the identifying fields only."""

from __future__ import annotations

from jobsched.v1 import (
    auth_service_pb2,
    job_service_pb2,
    queue_service_pb2,
    schedule_service_pb2,
)
from scheduler.auth.audit_table import AUDIT_RULES, UNLISTED, action_of, rule_for
from scheduler.auth.permissions import RPC_PERMISSIONS
from scheduler.domain.auth import Permission
from tests.unit.test_permission_table import every_rpc

READ_PREFIXES = ("Get", "List", "Watch")
# Calls that change something but are recorded elsewhere (a job's own history) or sit on the
# hot path of the executors (their outcomes are job events).
NOT_RECORDED = {
    "/jobsched.v1.JobService/SubmitJob",
    "/jobsched.v1.JobService/SubmitJobs",
    "/jobsched.v1.ExecutorService/Connect",
    "/jobsched.v1.ArtifactService/UploadArtifact",
}


def test_every_rpc_of_jobsched_v1_is_classified() -> None:
    rpcs = every_rpc()
    assert len(rpcs) > 30
    assert sorted(rpcs - AUDIT_RULES.keys()) == []
    assert sorted(AUDIT_RULES.keys() - rpcs) == []  # no stale entries


def test_every_mutating_rpc_is_recorded_on_every_call() -> None:
    for method, rule in AUDIT_RULES.items():
        name = action_of(method)
        mutating = not name.startswith(READ_PREFIXES) and method not in NOT_RECORDED
        assert rule.always == mutating, method
    # The permissions agree: nothing that only reads is recorded on success.
    read_only = {Permission.READ, Permission.READ_CLUSTER, Permission.READ_AUDIT}
    for method, permission in RPC_PERMISSIONS.items():
        if permission in read_only:
            assert not AUDIT_RULES[method].always, method


def test_actions_are_unique_rpc_names() -> None:
    actions = [action_of(m) for m in AUDIT_RULES]
    assert len(actions) == len(set(actions))
    assert action_of("/jobsched.v1.JobService/CancelJob") == "CancelJob"


def test_a_method_missing_from_the_table_is_recorded_on_every_call() -> None:
    assert rule_for("/jobsched.v1.NewService/Anything") is UNLISTED
    assert UNLISTED.always


def test_targets_come_from_identifiers_or_what_was_created() -> None:
    def target(method: str, request: object, response: object = None) -> str:
        return AUDIT_RULES["/jobsched.v1." + method].target(request, response)

    assert target("JobService/CancelJob", job_service_pb2.CancelJobRequest(id="j1")) == "j1"
    assert (
        target(
            "QueueService/UpdateQueue",
            queue_service_pb2.UpdateQueueRequest(queue=queue_service_pb2.Queue(name="emails")),
        )
        == "emails"
    )
    assert (
        target(
            "JobService/RetryJobs", job_service_pb2.RetryJobsRequest(queue="emails", type="send")
        )
        == "queue=emails type=send"
    )
    create = schedule_service_pb2.CreateScheduleRequest(
        schedule=schedule_service_pb2.Schedule(name="nightly")
    )
    made = schedule_service_pb2.CreateScheduleResponse(
        schedule=schedule_service_pb2.Schedule(id="s1", name="nightly")
    )
    assert target("ScheduleService/CreateSchedule", create, made) == "s1"
    assert target("ScheduleService/CreateSchedule", create) == "nightly"  # refused: as named
    key = auth_service_pb2.CreateApiKeyResponse(
        api_key=auth_service_pb2.ApiKey(id="k1"), secret="jsk_never"
    )
    assert target("AuthService/CreateApiKey", auth_service_pb2.CreateApiKeyRequest(), key) == "k1"
    assert target("ExecutorService/Connect", None) == ""
