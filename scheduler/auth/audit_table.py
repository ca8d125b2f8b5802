"""THE audit table: every RPC the scheduler serves (full method name) -> whether each call is
recorded in the audit log, and where its target comes from.

`ALWAYS`: every call, whatever its outcome (the mutating calls but submits, which the job's own
history records). `REFUSALS`: only calls refused UNAUTHENTICATED or PERMISSION_DENIED (reads,
submits, the executor's stream and uploads: recording their successes would put a write on the
hot path). tests/unit/test_audit_table.py walks every service of jobsched.v1 and fails when an
RPC is missing here, or when one that is not a read, a submit or an executor call is not
ALWAYS, so a new mutating RPC cannot go unaudited by accident.

A target is read from the request's identifying fields (never from a credential or a payload),
or, for what the call creates, from the response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (request, response or None) -> target; the request is None for client-streaming calls.
Target = Callable[[Any, Any], str]


def _path(message: Any, path: str) -> str:
    for name in path.split("."):
        if message is None:
            return ""
        message = getattr(message, name, None)
    return message if isinstance(message, str) else ""


def field(path: str) -> Target:
    """The request's field at `path` ("id", "queue.name")."""
    return lambda request, _response: _path(request, path)


def created(response_path: str, request_path: str) -> Target:
    """The id of what the call made (the response's field), else what the request named."""

    def target(request: Any, response: Any) -> str:
        return _path(response, response_path) or _path(request, request_path)

    return target


def filters(*paths: str) -> Target:
    """The request's non-empty filters, e.g. "queue=emails type=send" (RetryJobs)."""

    def target(request: Any, _response: Any) -> str:
        return " ".join(f"{p}={v}" for p in paths if (v := _path(request, p)))

    return target


def nothing(_request: Any, _response: Any) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class AuditRule:
    always: bool  # record every call; else only refused credentials and permissions
    target: Target = nothing


def ALWAYS(target: Target = nothing) -> AuditRule:
    return AuditRule(True, target)


def REFUSALS(target: Target = nothing) -> AuditRule:
    return AuditRule(False, target)


_JOBS = "/jobsched.v1.JobService/"
_QUEUES = "/jobsched.v1.QueueService/"
_SCHEDULES = "/jobsched.v1.ScheduleService/"
_TYPES = "/jobsched.v1.JobTypeService/"
_AUTH = "/jobsched.v1.AuthService/"
_ARTIFACTS = "/jobsched.v1.ArtifactService/"

AUDIT_RULES: dict[str, AuditRule] = {
    _JOBS + "SubmitJob": REFUSALS(),
    _JOBS + "SubmitJobs": REFUSALS(),
    _JOBS + "GetJobStatus": REFUSALS(field("id")),
    _JOBS + "ListActiveJobs": REFUSALS(),
    _JOBS + "GetJobHistory": REFUSALS(),
    _JOBS + "WatchJob": REFUSALS(field("id")),
    _JOBS + "WatchJobs": REFUSALS(),
    _JOBS + "ListJobLogs": REFUSALS(field("id")),
    _JOBS + "CancelJob": ALWAYS(field("id")),
    _JOBS + "RetryJob": ALWAYS(field("id")),
    _JOBS + "RetryJobs": ALWAYS(filters("queue", "type")),
    _JOBS + "DeleteJob": ALWAYS(field("id")),
    _JOBS + "UpdateJobPriority": ALWAYS(field("id")),
    _QUEUES + "GetQueue": REFUSALS(field("name")),
    _QUEUES + "ListQueues": REFUSALS(),
    _QUEUES + "UpdateQueue": ALWAYS(field("queue.name")),
    _QUEUES + "PauseQueue": ALWAYS(field("name")),
    _QUEUES + "ResumeQueue": ALWAYS(field("name")),
    _SCHEDULES + "GetSchedule": REFUSALS(field("id")),
    _SCHEDULES + "ListSchedules": REFUSALS(),
    _SCHEDULES + "CreateSchedule": ALWAYS(created("schedule.id", "schedule.name")),
    _SCHEDULES + "PauseSchedule": ALWAYS(field("id")),
    _SCHEDULES + "ResumeSchedule": ALWAYS(field("id")),
    _SCHEDULES + "DeleteSchedule": ALWAYS(field("id")),
    _SCHEDULES + "TriggerSchedule": ALWAYS(field("id")),
    _TYPES + "GetJobType": REFUSALS(field("name")),
    _TYPES + "ListJobTypes": REFUSALS(),
    _TYPES + "UpdateJobType": ALWAYS(field("job_type.name")),
    "/jobsched.v1.ClusterService/GetClusterStatus": REFUSALS(),
    "/jobsched.v1.ExecutorService/Connect": REFUSALS(),
    _ARTIFACTS + "UploadArtifact": REFUSALS(),
    _ARTIFACTS + "ListJobArtifacts": REFUSALS(field("job_id")),
    _ARTIFACTS + "GetArtifact": REFUSALS(field("job_id")),
    _AUTH + "CreateApiKey": ALWAYS(created("api_key.id", "")),
    _AUTH + "ListApiKeys": REFUSALS(),
    _AUTH + "RevokeApiKey": ALWAYS(field("id")),
    "/jobsched.v1.AuditService/ListAuditEvents": REFUSALS(),
}

# A method missing from the table (a bug the unit test prevents) is recorded on every call.
UNLISTED = ALWAYS()


def rule_for(method: str) -> AuditRule:
    return AUDIT_RULES.get(method, UNLISTED)


def action_of(method: str) -> str:
    """The action recorded for a full method name: the RPC's name ("CancelJob")."""
    return method.rsplit("/", 1)[-1] or method
