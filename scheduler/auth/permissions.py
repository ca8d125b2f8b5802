"""THE table: every RPC the scheduler serves (full method name) -> the permission it needs.

The AuthInterceptor refuses a method missing from it (PERMISSION_DENIED), and
tests/unit/test_permission_table.py walks every service of jobsched.v1 and fails when one is
missing, so a new RPC cannot ship unprotected by accident. Health checks and reflection need
no credential (PUBLIC): load balancers and grpcurl must reach them.
"""

from __future__ import annotations

from scheduler.domain.auth import Permission

_JOBS = "/jobsched.v1.JobService/"
_QUEUES = "/jobsched.v1.QueueService/"
_SCHEDULES = "/jobsched.v1.ScheduleService/"
_TYPES = "/jobsched.v1.JobTypeService/"
_AUTH = "/jobsched.v1.AuthService/"

RPC_PERMISSIONS: dict[str, Permission] = {
    _JOBS + "SubmitJob": Permission.SUBMIT,
    _JOBS + "SubmitJobs": Permission.SUBMIT,
    _JOBS + "GetJobStatus": Permission.READ,
    _JOBS + "ListActiveJobs": Permission.READ,
    _JOBS + "GetJobHistory": Permission.READ,
    _JOBS + "WatchJob": Permission.READ,
    _JOBS + "WatchJobs": Permission.READ,
    _JOBS + "ListJobLogs": Permission.READ,
    _JOBS + "CancelJob": Permission.OPERATE,
    _JOBS + "RetryJob": Permission.OPERATE,
    _JOBS + "RetryJobs": Permission.OPERATE,
    _JOBS + "DeleteJob": Permission.OPERATE,
    _JOBS + "UpdateJobPriority": Permission.OPERATE,
    _QUEUES + "GetQueue": Permission.READ,
    _QUEUES + "ListQueues": Permission.READ,
    _QUEUES + "UpdateQueue": Permission.MANAGE_QUEUES,
    _QUEUES + "PauseQueue": Permission.MANAGE_QUEUES,
    _QUEUES + "ResumeQueue": Permission.MANAGE_QUEUES,
    _SCHEDULES + "GetSchedule": Permission.READ,
    _SCHEDULES + "ListSchedules": Permission.READ,
    _SCHEDULES + "CreateSchedule": Permission.MANAGE_SCHEDULES,
    _SCHEDULES + "PauseSchedule": Permission.MANAGE_SCHEDULES,
    _SCHEDULES + "ResumeSchedule": Permission.MANAGE_SCHEDULES,
    _SCHEDULES + "DeleteSchedule": Permission.MANAGE_SCHEDULES,
    _SCHEDULES + "TriggerSchedule": Permission.MANAGE_SCHEDULES,
    _TYPES + "GetJobType": Permission.READ,
    _TYPES + "ListJobTypes": Permission.READ,
    _TYPES + "UpdateJobType": Permission.MANAGE_JOB_TYPES,
    "/jobsched.v1.ClusterService/GetClusterStatus": Permission.READ_CLUSTER,
    "/jobsched.v1.ExecutorService/Connect": Permission.EXECUTE,
    # Uploads come from executors (also proven by the attempt's session token); reads are
    # anyone's who may read jobs.
    "/jobsched.v1.ArtifactService/UploadArtifact": Permission.EXECUTE,
    "/jobsched.v1.ArtifactService/ListJobArtifacts": Permission.READ,
    "/jobsched.v1.ArtifactService/GetArtifact": Permission.READ,
    _AUTH + "CreateApiKey": Permission.MANAGE_KEYS,
    _AUTH + "ListApiKeys": Permission.MANAGE_KEYS,
    _AUTH + "RevokeApiKey": Permission.MANAGE_KEYS,
    "/jobsched.v1.AuditService/ListAuditEvents": Permission.READ_AUDIT,
}

# Services any caller may use: health checks (probes, load balancers) and server reflection.
PUBLIC_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def is_public(method: str) -> bool:
    return method.startswith(PUBLIC_PREFIXES)
