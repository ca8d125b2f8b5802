"""ScheduleService: cron schedules. Validates requests (the job template with SubmitJob's own
rules), calls the store, answers with protos; the leader's cron loop (scheduler/maintenance/
cron.py) fires them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import grpc

from jobsched.v1 import job_pb2, schedule_service_pb2, schedule_service_pb2_grpc
from scheduler.api.convert import duration, from_duration, job_to_proto, spec_from_proto, timestamp
from scheduler.api.job_service import utcnow
from scheduler.auth.identity import tenant_of
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.jobs import NewJob
from scheduler.domain.pagination import (
    decode_name_token,
    encode_name_token,
    fingerprint,
    page_size,
)
from scheduler.domain.schedules import (
    NEXT_FIRES_SHOWN,
    CatchupPolicy,
    NewSchedule,
    OverlapPolicy,
    ScheduleRecord,
    check_catchup_window,
    check_schedule_name,
    parse_rule,
    schedule_ref,
)
from scheduler.domain.validation import validate_job
from scheduler.store.schedules import Fired, ScheduleStore

Context = grpc.aio.ServicerContext[Any, Any]
pb = schedule_service_pb2

TEMPLATE_PATH = "schedule.job_template"

_OVERLAP_FROM_PROTO: dict[pb.OverlapPolicy.ValueType, OverlapPolicy] = {
    pb.OVERLAP_POLICY_UNSPECIFIED: OverlapPolicy.ALLOW,
    pb.OVERLAP_POLICY_ALLOW: OverlapPolicy.ALLOW,
    pb.OVERLAP_POLICY_SKIP: OverlapPolicy.SKIP,
    pb.OVERLAP_POLICY_CANCEL_PREVIOUS: OverlapPolicy.CANCEL_PREVIOUS,
}
_OVERLAP_TO_PROTO = {
    policy: value
    for value, policy in _OVERLAP_FROM_PROTO.items()
    if value != pb.OVERLAP_POLICY_UNSPECIFIED
}
_CATCHUP_FROM_PROTO: dict[pb.CatchupPolicy.ValueType, CatchupPolicy] = {
    pb.CATCHUP_POLICY_UNSPECIFIED: CatchupPolicy.NONE,
    pb.CATCHUP_POLICY_NONE: CatchupPolicy.NONE,
    pb.CATCHUP_POLICY_LATEST: CatchupPolicy.LATEST,
    pb.CATCHUP_POLICY_ALL: CatchupPolicy.ALL,
}
_CATCHUP_TO_PROTO = {
    policy: value
    for value, policy in _CATCHUP_FROM_PROTO.items()
    if value != pb.CATCHUP_POLICY_UNSPECIFIED
}


def _check_template(
    given: job_pb2.JobSpec, now: datetime, violations: list[FieldViolation]
) -> bytes:
    """The template as stored: validated like SubmitJob's job (field paths under
    schedule.job_template), queue and type normalised, run_at, idempotency_key and ref dropped
    (each fire gets its own)."""
    spec = job_pb2.JobSpec()
    spec.CopyFrom(given)
    for name in ("run_at", "idempotency_key", "ref"):
        spec.ClearField(name)
    for name in ("depends_on", "depends_on_refs"):
        if getattr(spec, name):
            violations.append(
                FieldViolation(
                    f"{TEMPLATE_PATH}.{name}", "a schedule's jobs cannot depend on other jobs"
                )
            )
    try:
        job = validate_job(spec_from_proto(spec, TEMPLATE_PATH), now, TEMPLATE_PATH)
    except InvalidArgument as exc:
        violations.extend(exc.violations)
        return b""
    spec.queue, spec.type = job.queue, job.type
    return spec.SerializeToString(deterministic=True)


def job_from_template(template: bytes, now: datetime) -> NewJob:
    """The job a fire submits, from a stored template (validated again: InvalidArgument if the
    rules changed under it). The fire sets its idempotency key."""
    spec = job_pb2.JobSpec.FromString(template)
    return validate_job(spec_from_proto(spec, TEMPLATE_PATH), now, TEMPLATE_PATH)


def validate_schedule(message: schedule_service_pb2.Schedule, now: datetime) -> NewSchedule:
    """A CreateSchedule's schedule, validated; InvalidArgument naming every offending field."""
    violations: list[FieldViolation] = []
    name = check_schedule_name(message.name, "schedule.name", violations)
    cron, zone, rule = parse_rule(message.cron, message.time_zone, violations)
    template = _check_template(message.job_template, now, violations)
    overlap = _OVERLAP_FROM_PROTO.get(message.overlap_policy)
    if overlap is None:
        violations.append(
            FieldViolation("schedule.overlap_policy", f"{message.overlap_policy} is not a policy")
        )
    catchup = _CATCHUP_FROM_PROTO.get(message.catchup_policy)
    if catchup is None:
        violations.append(
            FieldViolation("schedule.catchup_policy", f"{message.catchup_policy} is not a policy")
        )
    window = check_catchup_window(
        from_duration(message.catchup_window, "schedule.catchup_window")
        if message.HasField("catchup_window")
        else None,
        "schedule.catchup_window",
        violations,
    )
    if violations:
        raise InvalidArgument(violations)
    assert rule is not None
    assert overlap is not None
    assert catchup is not None
    return NewSchedule(
        name=name,
        cron=cron,
        time_zone=zone,
        job_template=template,
        overlap=overlap,
        catchup=catchup,
        catchup_window=window,
        next_fire_at=rule.next_after(now),
    )


def schedule_to_proto(
    schedule: ScheduleRecord, next_fires: int = 1
) -> schedule_service_pb2.Schedule:
    """`next_fires` next fire times (none while paused): the stored next one, then the rule's."""
    message = pb.Schedule(
        id=schedule.id,
        name=schedule.name,
        cron=schedule.cron,
        time_zone=schedule.time_zone,
        job_template=job_pb2.JobSpec.FromString(schedule.job_template),
        overlap_policy=_OVERLAP_TO_PROTO[schedule.overlap],
        catchup_policy=_CATCHUP_TO_PROTO[schedule.catchup],
        catchup_window=duration(schedule.catchup_window),
        paused=schedule.paused,
        last_fire_time=timestamp(schedule.last_fire_at),
        last_job_id=schedule.last_job_id or "",
        create_time=timestamp(schedule.created_at),
    )
    if not schedule.paused and next_fires > 0:
        times = [schedule.next_fire_at]
        times += schedule.rule.fire_times(schedule.next_fire_at, next_fires - 1)
        for at in times:
            message.next_fire_times.add().FromDatetime(at)
    return message


class ScheduleService(schedule_service_pb2_grpc.ScheduleServiceServicer):
    def __init__(
        self,
        store: ScheduleStore,
        clock: Callable[[], datetime] = utcnow,
        *,
        on_change: Callable[[], None] = lambda: None,
        on_fired: Callable[[Sequence[Fired]], None] = lambda fired: None,
    ) -> None:
        self.store = store
        self.clock = clock
        # A new or resumed schedule: the cron loop (if it runs here) recomputes its sleep.
        self.on_change = on_change
        # A triggered job: wake the dispatcher and the watchers, forward a cancel.
        self.on_fired = on_fired

    async def CreateSchedule(
        self, request: schedule_service_pb2.CreateScheduleRequest, context: Context
    ) -> schedule_service_pb2.CreateScheduleResponse:
        tenant = tenant_of(context)
        now = self.clock()
        schedule = await self.store.create(tenant, validate_schedule(request.schedule, now), now)
        self.on_change()
        return pb.CreateScheduleResponse(schedule=schedule_to_proto(schedule))

    async def GetSchedule(
        self, request: schedule_service_pb2.GetScheduleRequest, context: Context
    ) -> schedule_service_pb2.GetScheduleResponse:
        schedule = await self.store.get(tenant_of(context), schedule_ref(request.id))
        return pb.GetScheduleResponse(schedule=schedule_to_proto(schedule, NEXT_FIRES_SHOWN))

    async def ListSchedules(
        self, request: schedule_service_pb2.ListSchedulesRequest, context: Context
    ) -> schedule_service_pb2.ListSchedulesResponse:
        tenant = tenant_of(context)
        limit = page_size(request.page_size)
        fp = fingerprint({"list": "schedules", "tenant": tenant})
        after = decode_name_token(request.page_token, fp)
        page = await self.store.list_page(tenant, after, limit + 1)
        token = encode_name_token(page[limit - 1].name, fp) if len(page) > limit else ""
        return pb.ListSchedulesResponse(
            schedules=[schedule_to_proto(s) for s in page[:limit]], next_page_token=token
        )

    async def PauseSchedule(
        self, request: schedule_service_pb2.PauseScheduleRequest, context: Context
    ) -> schedule_service_pb2.PauseScheduleResponse:
        ref = schedule_ref(request.id)
        schedule = await self.store.pause(tenant_of(context), ref, self.clock())
        return pb.PauseScheduleResponse(schedule=schedule_to_proto(schedule))

    async def ResumeSchedule(
        self, request: schedule_service_pb2.ResumeScheduleRequest, context: Context
    ) -> schedule_service_pb2.ResumeScheduleResponse:
        ref = schedule_ref(request.id)
        schedule, resumed = await self.store.resume(tenant_of(context), ref, self.clock())
        if resumed:
            self.on_change()
        return pb.ResumeScheduleResponse(schedule=schedule_to_proto(schedule))

    async def DeleteSchedule(
        self, request: schedule_service_pb2.DeleteScheduleRequest, context: Context
    ) -> schedule_service_pb2.DeleteScheduleResponse:
        await self.store.delete(tenant_of(context), schedule_ref(request.id))
        return pb.DeleteScheduleResponse()

    async def TriggerSchedule(
        self, request: schedule_service_pb2.TriggerScheduleRequest, context: Context
    ) -> schedule_service_pb2.TriggerScheduleResponse:
        ref = schedule_ref(request.id)
        now = self.clock()
        template: list[NewJob] = []

        def template_of(schedule: ScheduleRecord) -> NewJob:
            template.append(job_from_template(schedule.job_template, now))
            return template[0]

        _, fired = await self.store.trigger(tenant_of(context), ref, now, template_of, "client")
        self.on_fired([fired])
        response = pb.TriggerScheduleResponse(skipped=fired.skipped)
        if fired.job is not None:
            response.job.CopyFrom(job_to_proto(fired.job))
            response.job.payload = template[0].payload  # the insert returns projected columns
        return response
