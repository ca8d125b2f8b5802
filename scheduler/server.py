"""Assembles the scheduler's gRPC server: JobService, health, reflection and the interceptors."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jobsched import keepalive
from jobsched.metric_exporters import metrics_pushed
from jobsched.tracing import TracingSettings
from jobsched.v1 import (
    artifact_service_pb2,
    artifact_service_pb2_grpc,
    audit_service_pb2,
    audit_service_pb2_grpc,
    auth_service_pb2,
    auth_service_pb2_grpc,
    cluster_service_pb2,
    cluster_service_pb2_grpc,
    executor_service_pb2,
    executor_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
    job_type_service_pb2,
    job_type_service_pb2_grpc,
    queue_service_pb2,
    queue_service_pb2_grpc,
    schedule_service_pb2,
    schedule_service_pb2_grpc,
)
from scheduler.api.artifact_service import ArtifactService
from scheduler.api.audit_service import AuditService
from scheduler.api.auth_service import AuthService
from scheduler.api.cluster_service import ClusterService
from scheduler.api.encoded_streams import add_with_encoded_streams
from scheduler.api.executor_service import ExecutorService
from scheduler.api.health import DatabaseHealthProbe
from scheduler.api.interceptors import AccessLogInterceptor, ErrorInterceptor
from scheduler.api.job_service import JobService, utcnow
from scheduler.api.job_type_service import JobTypeService
from scheduler.api.limits import DEFAULT_MAX_CONCURRENT_RPCS, DEFAULT_MAX_STREAMS, AdmissionLimiter
from scheduler.api.queue_service import QueueService
from scheduler.api.schedule_service import ScheduleService, job_from_template
from scheduler.artifacts.downloads import ArtifactDownloads
from scheduler.artifacts.uploads import ArtifactUploads
from scheduler.auth.api_keys import CACHE_SECONDS, ApiKeyAuthenticator
from scheduler.auth.audit_interceptor import AuditInterceptor
from scheduler.auth.audit_writer import AuditWriter
from scheduler.auth.bootstrap import bootstrap_admin_key, bootstrap_executor_key
from scheduler.auth.credentials import CredentialAuthenticator
from scheduler.auth.interceptor import AuthInterceptor
from scheduler.auth.jwt import JwtSettings
from scheduler.auth.mtls import MtlsIdentity
from scheduler.auth.rate_limits import FailedAuthGate, RateLimiter
from scheduler.auth.revocations import RevokedKeySweeper
from scheduler.cluster import ReplicaPresence, new_replica_id
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.dispatch.notify import Notifier
from scheduler.dispatch.registration import Registrar
from scheduler.dispatch.watchdog import HeartbeatWatchdog
from scheduler.domain.artifacts import (
    DEFAULT_MAX_ARTIFACT_BYTES,
    DEFAULT_MAX_JOB_ARTIFACT_BYTES,
    ArtifactLimits,
    S3Location,
)
from scheduler.domain.queues import MAX_RETENTION
from scheduler.domain.rate_limits import RateLimitPolicy
from scheduler.domain.states import JobState
from scheduler.leader import LeaderElector, Role
from scheduler.maintenance.artifact_janitor import ArtifactJanitor
from scheduler.maintenance.cron import CronFirer
from scheduler.maintenance.rescue import LeaseRescuer
from scheduler.maintenance.retention import (
    DEFAULT_AUDIT_RETENTION,
    DEFAULT_RETENTION,
    RetentionSweeper,
)
from scheduler.store.api_keys import ApiKeyStore
from scheduler.store.attempts import DEFAULT_STARVATION_AFTER, Rescued
from scheduler.store.audit import AuditStore
from scheduler.store.database import Database
from scheduler.store.job_types import JobTypeStore
from scheduler.store.jobs import JobStore
from scheduler.store.leadership import ClusterStore
from scheduler.store.queues import QueueReads, QueueStore
from scheduler.store.schedules import Fired, ScheduleStore
from scheduler.store.submit_groups import SubmitGroups
from scheduler.telemetry.tracing import TracingInterceptor
from scheduler.tls import ReloadingCredentials, ServerTLS
from scheduler.watch import JobWatchHub

if TYPE_CHECKING:
    from jobsched.metrics_http import MetricsServer
    from scheduler.artifacts.s3 import S3Objects
    from scheduler.telemetry.metrics import SchedulerMetrics
    from scheduler.telemetry.queue_depth import QueueDepthSampler

log = logging.getLogger("jobsched.scheduler")

AUTH_MODES = ("off", "required")

DEFAULT_LISTEN = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a SubmitJobs batch of large payloads

# Keepalive agreed with the executors and clients (jobsched.keepalive). HTTP/2 streams per
# connection: far above what one client multiplexes (its excess waits on its side, it is never
# refused), so that the admission limiter (scheduler/api/limits.py), not the transport, decides
# what is too much, and says so with RESOURCE_EXHAUSTED.
MAX_STREAMS_PER_CONNECTION = 100_000
# Calls gRPC core has received but the server's event loop has not picked up yet. Past core's
# defaults (1,000, and at random up to 3,000) it cancels them silently: the excess of ~1,400
# concurrent calls failed as bare CANCELLED with no log line. Far above the admission limits,
# so that they are let in and refused RESOURCE_EXHAUSTED, logged and counted.
MAX_PENDING_CALLS = 20_000
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
    *keepalive.server_options(),
]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str = DEFAULT_LISTEN
    shutdown_grace: float = 5.0
    # The health probe's period; it pings only when the leader-election connection has not had
    # an answer within it (scheduler/api/health.py).
    health_interval: float = 2.0
    heartbeat_interval: float = 3.0
    lease: timedelta = timedelta(seconds=30)
    ack_timeout: timedelta = timedelta(seconds=10)
    reconnect_grace: timedelta = timedelta(seconds=10)
    # The dispatcher's safety poll (claims and promotion of SCHEDULED jobs; wake-ups are event
    # driven: local signals, NOTIFY jobsched_work, wake_at timers). None: 5 s with LISTEN/NOTIFY,
    # 1 s without (then the poll is the only way work submitted elsewhere is noticed).
    poll_interval: float | None = None
    # The cron loop's safety poll while leading: schedules created or resumed on any replica
    # wake it at once (jobsched_schedules), so this only bounds a lost signal.
    cron_poll_interval: float = 30.0
    # TEST ONLY, never set in production: the cron loop and the schedule API read the clock
    # shifted by this many seconds (every replica of a test given the same offset), so that a
    # fault test can bring a once-a-minute fire due within seconds of its start
    # (tests/faults/test_cron_faults.py). Nothing else (leases, leadership, jobs) is shifted.
    test_cron_clock_offset: float = 0.0
    # How often the latest progress of each running job is written to the store (watchers on
    # this replica get it at once, from memory).
    progress_interval: float = 0.5
    # LISTEN/NOTIFY between replicas; off only for tests that want one replica in isolation
    notify: bool = True
    # Leader election (scheduler/leader.py) and the leader-only lease rescue.
    # Followers campaign every tick; the leader renews every leader_renew_interval (None:
    # max(tick, renew timeout / 3)) and stops acting renew timeout after its last good renew.
    leader_tick: float = 1.0
    leader_renew_timeout: float = 5.0
    leader_renew_interval: float | None = None
    # The longest the leader's rescue loop sleeps: it wakes at the earliest lease expiry or
    # timeout deadline of the RUNNING jobs, and at most this long after its last look.
    rescue_interval: float = 5.0
    # The scheduler fails a RUNNING job this long after started_at + timeout (the executor's own
    # cancel grace is 5 s by default, so it normally reports first).
    timeout_grace: timedelta = timedelta(seconds=10)
    # How often each replica records itself for GetClusterStatus.
    presence_interval: float = 5.0
    # A job QUEUED this long is claimed before younger ones, whatever their priority.
    starvation_after: timedelta = DEFAULT_STARVATION_AFTER
    # A job handed back without running (its assignment not acknowledged in time, released by
    # its executor, or never acknowledged by a lost stream) is requeued without burning an
    # attempt up to this many times; the next hand-back ends it DEAD. Ten ack timeouts are
    # minutes of a job bouncing: far past any honest executor's bad luck.
    max_releases: int = 10
    # An executor silent for this long (no Heartbeat) has its stream ended (UNAVAILABLE); after
    # two heartbeat intervals it already gets no assignments. None: 4 heartbeat intervals (12 s
    # by default): three heartbeats in a row lost before the stream goes, and with the
    # reconnect grace (10 s) its attempts move on before their lease (30 s) could expire. An
    # attempt missing from its heartbeats for as long is failed ("the executor no longer runs
    # it").
    heartbeat_timeout: timedelta | None = None
    # After the store was unreachable, the lease rescue and the timeout backstop wait this long
    # once it answers again: no lease could be renewed meanwhile, and the executors need a
    # heartbeat to renew them and up to two to re-send the results they kept. None: 3 heartbeat
    # intervals + 1 s (10 s by default).
    rescue_recovery_grace: timedelta | None = None
    # Admission limits (scheduler/api/limits.py): unary calls in progress, and long-lived
    # streams (WatchJob, WatchJobs, Connect); past either, calls are RESOURCE_EXHAUSTED
    # (reason OVERLOADED) at once.
    max_concurrent_rpcs: int = DEFAULT_MAX_CONCURRENT_RPCS
    max_streams: int = DEFAULT_MAX_STREAMS
    # The leader deletes finished jobs this long after they finished, in the queues without a
    # retention of their own (QueueService.UpdateQueue); zero keeps them forever.
    retention: timedelta = DEFAULT_RETENTION
    # The leader deletes audit events this long after they were recorded; zero keeps them.
    audit_retention: timedelta = DEFAULT_AUDIT_RETENTION
    # Connections are closed this long after they opened (None: never), after a grace of
    # `connection_age_grace`, so that clients and executors behind a Kubernetes Service
    # reconnect through DNS and spread over the replicas again after a rollout or a scale-up.
    max_connection_age: timedelta | None = None
    # Serve TLS (and require client certificates signed by its client_ca: mutual TLS).
    tls: ServerTLS | None = None
    # "required": every RPC but health and reflection needs a credential (scheduler/auth/);
    # "off": any caller acts for any tenant (the command line then refuses a non-loopback
    # address unless --insecure).
    auth: str = "off"
    # JOBSCHED_BOOTSTRAP_KEY: stored as an admin key at start when no admin key exists.
    bootstrap_key: str | None = field(default=None, repr=False)
    # JOBSCHED_BOOTSTRAP_EXECUTOR_KEY: stored as an executor key (every tenant) if new.
    bootstrap_executor_key: str | None = field(default=None, repr=False)
    # How long a verified API key is used without asking the store again: the bound on how
    # late another replica's revocation takes effect here.
    auth_cache_seconds: float = CACHE_SECONDS
    # With auth required, also JWT bearer tokens (scheduler/auth/jwt.py) and, over mutual TLS,
    # client certificates mapped by these rules (scheduler/auth/mtls.py). None / (): not accepted.
    jwt: JwtSettings | None = None
    mtls_identities: tuple[MtlsIdentity, ...] = ()
    # Rate and stream limits per caller (scheduler/domain/rate_limits.py).
    rate_limits: RateLimitPolicy = field(default_factory=RateLimitPolicy)
    # Artifacts (scheduler/artifacts/): "" keeps their content in PostgreSQL, "s3://bucket/prefix"
    # in S3-compatible object storage (credentials and region from the AWS environment variables),
    # at `artifact_s3_endpoint` if given. Uploads past either limit are RESOURCE_EXHAUSTED.
    artifact_store: str = ""
    artifact_s3_endpoint: str | None = None
    max_artifact_bytes: int = DEFAULT_MAX_ARTIFACT_BYTES
    max_job_artifact_bytes: int = DEFAULT_MAX_JOB_ARTIFACT_BYTES
    # Metrics (scheduler/telemetry/): HTTP /metrics, /healthz and /readyz on this host:port
    # (port 0 picks a free one); None, the default: off, and nothing is counted unless
    # OTEL_METRICS_EXPORTER asks for OTLP. The leader samples the queue depth every
    # queue_depth_interval seconds.
    metrics_listen: str | None = None
    queue_depth_interval: float = 15.0
    # Traces (scheduler/telemetry/tracing.py, jobsched/tracing.py): off unless an exporter is
    # configured (OTEL_TRACES_EXPORTER, the config file); each server has its own provider.
    tracing: TracingSettings = field(default_factory=TracingSettings)

    def __post_init__(self) -> None:
        self.artifact_limits  # noqa: B018 (raises ValueError for bad limits)
        self.artifact_location  # noqa: B018
        if self.heartbeat_timeout is not None and self.heartbeat_timeout <= timedelta(
            seconds=2 * self.heartbeat_interval
        ):
            raise ValueError("heartbeat_timeout must be longer than two heartbeat intervals")
        if self.max_releases < 0:
            raise ValueError("max_releases must not be negative")
        if not timedelta(0) <= self.retention <= MAX_RETENTION:
            raise ValueError(
                f"retention must be zero (keep forever) or positive, at most {MAX_RETENTION.days}"
                " days"
            )
        if not timedelta(0) <= self.audit_retention <= MAX_RETENTION:
            raise ValueError(
                "audit_retention must be zero (keep forever) or positive, at most "
                f"{MAX_RETENTION.days} days"
            )
        if self.auth not in AUTH_MODES:
            raise ValueError(f"auth must be one of {', '.join(AUTH_MODES)}")
        if (self.jwt is not None or self.mtls_identities) and self.auth != "required":
            raise ValueError("JWT and mTLS identities are credentials: they need auth required")
        if self.mtls_identities and (self.tls is None or self.tls.client_ca is None):
            raise ValueError("mTLS identities need mutual TLS (a client CA)")
        if not self.queue_depth_interval > 0:
            raise ValueError("queue_depth_interval must be positive")
        if self.metrics_listen is not None:
            _host, colon, port = self.metrics_listen.rpartition(":")
            if not colon or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"metrics listen address {self.metrics_listen!r} is not HOST:PORT")
        if self.max_connection_age is not None and self.max_connection_age <= timedelta(0):
            raise ValueError("max_connection_age must be positive (None: connections never age)")

    @property
    def artifact_limits(self) -> ArtifactLimits:
        return ArtifactLimits(self.max_artifact_bytes, self.max_job_artifact_bytes)

    @property
    def artifact_location(self) -> S3Location | None:
        """Where artifact content goes; None: PostgreSQL."""
        return S3Location.parse(self.artifact_store) if self.artifact_store else None

    @property
    def executor_heartbeat_timeout(self) -> timedelta:
        """heartbeat_timeout, or its default of four heartbeat intervals."""
        if self.heartbeat_timeout is not None:
            return self.heartbeat_timeout
        return timedelta(seconds=4 * self.heartbeat_interval)

    @property
    def recovery_grace(self) -> timedelta:
        """rescue_recovery_grace, or its default of three heartbeat intervals + 1 s."""
        if self.rescue_recovery_grace is not None:
            return self.rescue_recovery_grace
        return timedelta(seconds=3 * self.heartbeat_interval + 1)

    @property
    def lease_renew_within(self) -> timedelta:
        """A heartbeat renews the leases that end within this: half the lease, and at least
        three heartbeat intervals, so that a lease never runs low between heartbeats (each
        renewal rewrites the job's row and its index entries; every heartbeat did before)."""
        return max(self.lease / 2, timedelta(seconds=3 * self.heartbeat_interval))

    @property
    def connection_age_grace(self) -> timedelta:
        """How long calls in flight on a connection past max_connection_age may go on: three
        heartbeat intervals (9 s by default). Unary calls end well within it, and an executor
        gets the acks of the results it sends meanwhile. Streams still open are then cut
        (UNAVAILABLE): an executor reconnects and re-attaches its running jobs with its session
        token (within reconnect_grace); a WatchJob can be resumed with after_sequence."""
        return timedelta(seconds=3 * self.heartbeat_interval)

    @property
    def grpc_options(self) -> list[tuple[str, int]]:
        """SERVER_OPTIONS, and with max_connection_age, gRPC core's own: GOAWAY at that age
        (+/-10 % jitter), so that clients open their next calls on a new connection, and the
        connection closed after the grace."""
        if self.max_connection_age is None:
            return SERVER_OPTIONS
        return [
            *SERVER_OPTIONS,
            ("grpc.max_connection_age_ms", _ms(self.max_connection_age)),
            ("grpc.max_connection_age_grace_ms", _ms(self.connection_age_grace)),
        ]

    @property
    def dispatch_poll_interval(self) -> float:
        if self.poll_interval is not None:
            return self.poll_interval
        return 5.0 if self.notify else 1.0


def _ms(value: timedelta) -> int:
    return math.ceil(value.total_seconds() * 1000)  # never 0 for a positive value


class SchedulerServer:
    """The scheduler's gRPC server (start/stop service). `address` is known after start()."""

    def __init__(
        self,
        db: Database,
        settings: ServerSettings = ServerSettings(),
        clock: Callable[[], datetime] = utcnow,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        """`interceptors` run inside the access log, the error mapping and the admission
        limits (tests inject faults with them)."""
        self.db = db
        self.settings = settings
        self.limiter = AdmissionLimiter(settings.max_concurrent_rpcs, settings.max_streams)
        self.clock = clock
        self.api_keys = ApiKeyStore(db)
        self.authenticator = ApiKeyAuthenticator(
            self.api_keys, clock, cache_seconds=settings.auth_cache_seconds
        )
        self.credentials = CredentialAuthenticator.configured(
            self.authenticator, settings.jwt, settings.mtls_identities
        )
        # Authentication inside the error mapping (its refusals get rich statuses) and the
        # admission limits (a flood of unknown keys cannot queue unbounded store lookups).
        auth: list[grpc.aio.ServerInterceptor] = (
            [AuthInterceptor(self.credentials)] if settings.auth == "required" else []
        )
        # The audit log, outside the authentication (it records its refusals) and inside the
        # error mapping (it sees domain errors, not statuses); scheduler/auth/audit_table.py.
        self.audit_store = AuditStore(db)
        self.audit_writer = AuditWriter(self.audit_store)
        self.audit_interceptor = AuditInterceptor(
            self.audit_writer, clock, auth_required=settings.auth == "required"
        )
        # Rate limits (scheduler/auth/rate_limits.py): inside the authentication, per principal
        # (with auth off, per peer); failed authentications per peer, outside it.
        self.rate_limiter = RateLimiter(settings.rate_limits)
        gate = [FailedAuthGate(self.rate_limiter, self.credentials)] if auth else []
        self.metrics: SchedulerMetrics | None = None
        if settings.metrics_listen is not None or metrics_pushed():
            from scheduler.telemetry.metrics import SchedulerMetrics

            self.metrics = SchedulerMetrics(prometheus=settings.metrics_listen is not None)
        # With tracing off there is no provider, no interceptor and tracer None everywhere.
        self.tracing = settings.tracing.build()
        tracer = self.tracing.tracer if self.tracing is not None else None
        self.server = grpc.aio.server(
            interceptors=[
                *([TracingInterceptor(tracer)] if tracer is not None else []),
                AccessLogInterceptor(self.metrics.rpc_ended if self.metrics else None),
                ErrorInterceptor(),
                self.limiter,
                self.audit_interceptor,
                *gate,
                *auth,
                self.rate_limiter,
                *interceptors,
            ],
            options=settings.grpc_options,
        )
        self.hub = JobWatchHub()
        self.notifier = Notifier(db.dsn) if settings.notify else None
        self.dispatcher = Dispatcher(
            db,
            clock,
            lease=settings.lease,
            ack_timeout=settings.ack_timeout,
            reconnect_grace=settings.reconnect_grace,
            poll_interval=settings.dispatch_poll_interval,
            progress_interval=settings.progress_interval,
            starvation_after=settings.starvation_after,
            hub=self.hub,
            notifier=self.notifier,
            lease_renew_within=settings.lease_renew_within,
            max_releases=settings.max_releases,
            heartbeat_timeout=settings.executor_heartbeat_timeout,
            tracer=tracer,
        )
        # One task ends the streams of silent executors (scheduler/dispatch/watchdog.py).
        self.watchdog = HeartbeatWatchdog(
            lambda: self.dispatcher.sessions.values(),
            self.dispatcher.remove,
            settings.executor_heartbeat_timeout.total_seconds(),
        )
        self.replica_id = new_replica_id()
        self.leader = LeaderElector(
            db.dsn,
            self.replica_id,
            tick=settings.leader_tick,
            renew_timeout=settings.leader_renew_timeout,
            renew_interval=settings.leader_renew_interval,
            on_change=self._role_changed,
            on_database_error=db.note_unavailable,
        )
        self.rescuer = LeaseRescuer(
            db,
            self.leader,
            clock,
            interval=settings.rescue_interval,
            timeout_grace=settings.timeout_grace,
            lease=settings.lease,
            on_rescued=self._rescued,
            recovery_grace=settings.recovery_grace,
        )
        # Leader-only cron firing (scheduler/maintenance/cron.py).
        cron_clock = clock
        if settings.test_cron_clock_offset:
            log.warning(
                "the cron clock is shifted (a test-only setting)",
                extra={
                    "fields": {
                        "event": "scheduler.test_cron_clock_offset",
                        "seconds": settings.test_cron_clock_offset,
                    }
                },
            )
            cron_clock = _shifted(clock, timedelta(seconds=settings.test_cron_clock_offset))
        self.cron = CronFirer(
            db,
            self.leader,
            cron_clock,
            job_from_template,
            poll_interval=(
                settings.cron_poll_interval
                if self.notifier is not None
                else settings.dispatch_poll_interval
            ),
            on_fired=self._fired,
        )
        if self.notifier is not None:
            self.notifier.on_schedules = self.cron.wake
        # Leader-only deletion of finished jobs (scheduler/maintenance/retention.py).
        self.retention = RetentionSweeper(
            db,
            self.leader,
            clock,
            retention=settings.retention,
            audit_retention=settings.audit_retention,
        )
        self.rescuer.tracer = self.cron.tracer = self.retention.tracer = tracer
        schedule_service_pb2_grpc.add_ScheduleServiceServicer_to_server(
            ScheduleService(
                ScheduleStore(db),
                cron_clock,
                on_change=self._schedules_changed,
                on_fired=self._fired,
            ),
            self.server,
        )
        self.presence = ReplicaPresence(
            db, self.replica_id, self.dispatcher, clock, interval=settings.presence_interval
        )
        if self.notifier is not None:
            # Watchers here see changes made on other replicas, and the reverse (only when
            # there are other replicas: a lone scheduler sends nothing).
            notifier = self.notifier
            self.notifier.on_jobs = self.hub.notify_remote
            self.hub.forward = lambda job_id: (
                notifier.jobs_changed(job_id) if self.presence.peers else None
            )
            # Live progress too, as soon as it is reported (issue 19: cross-replica progress).
            self.notifier.on_progress = self.hub.publish_remote_progress
            self.hub.forward_progress = lambda job_id, attempt, progress: (
                notifier.progress(job_id, attempt, progress) if self.presence.peers else None
            )
            self.dispatcher.has_peers = lambda: self.presence.peers > 0
        self.queue_reads = QueueReads(db, timedelta(seconds=3 * settings.presence_interval))
        queue_service_pb2_grpc.add_QueueServiceServicer_to_server(
            QueueService(
                QueueStore(db),
                self.queue_reads,
                clock,
                on_change=self.dispatcher.new_work,
            ),
            self.server,
        )
        job_type_service_pb2_grpc.add_JobTypeServiceServicer_to_server(
            JobTypeService(JobTypeStore(db), clock), self.server
        )
        cluster_service_pb2_grpc.add_ClusterServiceServicer_to_server(
            ClusterService(
                ClusterStore(db), clock, timedelta(seconds=3 * settings.presence_interval)
            ),
            self.server,
        )
        job_store = JobStore(db)
        self.submit_groups = SubmitGroups(job_store)
        self.job_service = JobService(
            job_store,
            clock,
            on_new_work=self.dispatcher.new_work,
            on_scheduled=self.dispatcher.wake_at,
            on_cancel_requested=self.dispatcher.request_cancel,
            hub=self.hub,
            queue_reads=self.queue_reads,
            on_submitted=self.metrics.jobs_submitted if self.metrics else None,
            submit_groups=self.submit_groups,
        )
        # WatchJob sends a job's live progress encoded once for all its watchers.
        add_with_encoded_streams(
            job_service_pb2_grpc.add_JobServiceServicer_to_server,
            self.job_service,
            self.server,
            ["WatchJob"],
        )
        registrar = Registrar(
            db,
            self.dispatcher,
            self.replica_id,
            clock,
            live_within=timedelta(seconds=3 * settings.presence_interval),
            has_peers=lambda: self.presence.peers > 0,
        )
        self._add_artifacts(db, settings, clock, registrar)
        executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server(
            ExecutorService(
                self.dispatcher,
                registrar,
                settings.heartbeat_interval,
                settings.executor_heartbeat_timeout,
            ),
            self.server,
        )
        # Executor streams whose key is revoked or expires end within the cache's lifetime.
        self.revocations = RevokedKeySweeper(
            lambda: self.dispatcher.sessions.values(),
            self.dispatcher.remove,
            self.api_keys,
            clock,
            settings.auth_cache_seconds,
        )
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthService(self.api_keys, self.authenticator, clock, on_revoked=self.revocations.wake),
            self.server,
        )
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(
            AuditService(self.audit_store), self.server
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
                artifact_service_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name,
                executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name,
                cluster_service_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
                queue_service_pb2.DESCRIPTOR.services_by_name["QueueService"].full_name,
                job_type_service_pb2.DESCRIPTOR.services_by_name["JobTypeService"].full_name,
                schedule_service_pb2.DESCRIPTOR.services_by_name["ScheduleService"].full_name,
                auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
                audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        # The leader-election connection answers every tick or renew: while it does, the health
        # probe has its answer without a ping of its own.
        self.probe = DatabaseHealthProbe(
            db,
            self.health,
            interval=settings.health_interval,
            answered_at=lambda: self.leader.answered_at,
        )
        self._add_metrics(db, settings)
        self.address = ""
        # TLS when configured; reload_tls() (SIGHUP) re-reads the files for new connections.
        self.tls = ReloadingCredentials(settings.tls) if settings.tls is not None else None

    def _add_metrics(self, db: Database, settings: ServerSettings) -> None:
        """With metrics on: the outcome, start and statement hooks, the gauges, the leader's
        queue-depth sampler and (with metrics_listen) the HTTP server of /metrics, /healthz
        and /readyz."""
        self.queue_depth: QueueDepthSampler | None = None
        self.metrics_server: MetricsServer | None = None
        if self.metrics is None:
            return
        from scheduler.telemetry.gauges import SchedulerGauges
        from scheduler.telemetry.queue_depth import QueueDepthSampler

        self.dispatcher.on_outcome = self.metrics.job_finished
        self.dispatcher.on_started = self.metrics.jobs_started
        db.on_statement = self.metrics.transaction_ended
        self.queue_depth = QueueDepthSampler(
            db,
            lambda: self.leader.is_leader,
            settings.queue_depth_interval,
            live_within=timedelta(seconds=3 * settings.presence_interval),
        )
        SchedulerGauges(
            leader=self.leader,
            sessions=lambda: list(self.dispatcher.sessions.values()),
            hub=self.hub,
            db=db,
            queue_depth=self.queue_depth,
            queue_label=self.metrics.queue_label,
            ready=lambda: self.probe.serving,
        ).register(self.metrics.metering)
        if settings.metrics_listen is not None:
            from jobsched.metrics_http import MetricsServer

            self.metrics_server = MetricsServer(
                settings.metrics_listen,
                self.metrics.exposition,
                lambda: self.probe.serving,
                unready="the job store is unreachable",
            )

    def reload_tls(self) -> None:
        if self.tls is not None:
            self.tls.reload()

    def _add_artifacts(
        self,
        db: Database,
        settings: ServerSettings,
        clock: Callable[[], datetime],
        registrar: Registrar,
    ) -> None:
        """ArtifactService, and with an S3 store the leader's janitor of removed objects."""
        location = settings.artifact_location
        self.artifact_objects: S3Objects | None = None
        self.artifact_janitor: ArtifactJanitor | None = None
        if location is not None:
            from scheduler.artifacts.s3 import S3Objects  # boto3 is imported only when used

            self.artifact_objects = S3Objects(location, endpoint_url=settings.artifact_s3_endpoint)
            self.artifact_janitor = ArtifactJanitor(db, self.leader, clock, self.artifact_objects)
        artifact_service_pb2_grpc.add_ArtifactServiceServicer_to_server(
            ArtifactService(
                ArtifactUploads(db, settings.artifact_limits, clock, self.artifact_objects),
                ArtifactDownloads(db, self.artifact_objects),
                registrar.tokens,
            ),
            self.server,
        )

    async def start(self) -> str:
        if self.settings.bootstrap_key is not None:
            await self._bootstrap(self.settings.bootstrap_key)
        if self.settings.bootstrap_executor_key is not None:
            stored = await bootstrap_executor_key(
                self.api_keys, self.clock(), self.settings.bootstrap_executor_key
            )
            fields = {"event": "scheduler.bootstrap_executor_key", "stored": stored is not None}
            log.info("bootstrap executor key", extra={"fields": fields})
        if self.tls is not None:
            port = self.server.add_secure_port(self.settings.listen, self.tls.credentials())
        else:
            port = self.server.add_insecure_port(self.settings.listen)
        if port == 0:
            raise RuntimeError(f"cannot listen on {self.settings.listen}")
        host = self.settings.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        if self.settings.auth == "required":
            await self.credentials.start()  # the JWKS is read before the first call
        await self.audit_writer.start()
        await self.server.start()
        await self.probe.start()
        await self.dispatcher.start()
        await self.watchdog.start()
        if self.settings.auth == "required":
            await self.revocations.start()
        await self.presence.start(self.address)
        await self.leader.start()
        await self.rescuer.start()
        await self.cron.start()
        await self.retention.start()
        if self.artifact_janitor is not None:
            await self.artifact_janitor.start()
        if self.queue_depth is not None:
            await self.queue_depth.start()
        if self.metrics_server is not None:
            await self.metrics_server.start()
        log.info(
            "listening",
            extra={
                "fields": {
                    "event": "scheduler.listening",
                    "address": self.address,
                    "auth": self.settings.auth,
                }
            },
        )
        if self.settings.auth == "off":
            log.warning(
                "authentication is off: any caller may act for any tenant (--auth required)",
                extra={"fields": {"event": "scheduler.auth_off"}},
            )
        return self.address

    async def _bootstrap(self, secret: str) -> None:
        made = await bootstrap_admin_key(self.api_keys, self.clock(), secret)
        fields = {"event": "scheduler.bootstrap_key", "stored": made is not None}
        if made is not None:
            fields["key_id"] = made[0].id
        log.info("bootstrap admin key", extra={"fields": fields})

    def _role_changed(self, role: Role) -> None:
        # A new leader fires what is due, looks at the rescue deadlines and sweeps at once.
        self.cron.wake()
        self.rescuer.wake()
        self.retention.wake()
        if self.artifact_janitor is not None:
            self.artifact_janitor.wake()
        if self.queue_depth is not None:
            self.queue_depth.wake()

    def _rescued(self, rescued: list[Rescued]) -> None:
        for job in rescued:
            self.hub.notify(job.job_id)
            self.dispatcher.stop_attempt(job.job_id, "the attempt was rescued by the scheduler")
            if job.state is JobState.SCHEDULED:
                self.dispatcher.wake_at(job.run_at)

    def _schedules_changed(self) -> None:
        """A schedule was created or resumed here: the cron loop of the leader, wherever it
        runs, looks at the next fire times again."""
        self.cron.wake()
        if self.notifier is not None:
            self.notifier.schedules_changed()

    def _fired(self, fired: Sequence[Fired]) -> None:
        """Schedule fires (the cron loop, TriggerSchedule): dispatch their jobs at once, tell
        the watchers, and forward the cancels of CANCEL_PREVIOUS to the executors."""
        submitted = [f.job for f in fired if f.job is not None]
        if self.metrics is not None:
            self.metrics.jobs_submitted(submitted)
        for job in submitted:
            self.hub.notify(job.id)
        if submitted:
            self.dispatcher.new_work()
        for f in fired:
            if f.cancelled is not None:
                self.hub.notify(f.cancelled.id)
                if f.cancelled.state is JobState.RUNNING:
                    self.dispatcher.request_cancel(f.cancelled)

    async def stop(self, grace: float | None = None) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.queue_depth is not None:
            await self.queue_depth.stop()
        # Resign first, so that a follower takes over at its next tick, not after a timeout.
        await self.rescuer.stop()
        await self.cron.stop()
        await self.retention.stop()
        if self.artifact_janitor is not None:
            await self.artifact_janitor.stop()
        await self.leader.stop()
        await self.presence.stop()
        await self.probe.stop()
        await self.watchdog.stop()
        await self.revocations.stop()
        await self.credentials.stop()
        await self.dispatcher.stop()  # closes executor streams so the server can drain
        self.hub.close()  # ends WatchJobs streams (UNAVAILABLE: subscribe again elsewhere)
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        await self.submit_groups.close()  # the groups of submits cut off by the grace
        await self.audit_writer.stop()  # after the calls: their events are written first
        if self.artifact_objects is not None:
            self.artifact_objects.close()
        if self.metrics is not None:
            if self.db.on_statement == self.metrics.transaction_ended:  # not another server's
                self.db.on_statement = None
            await asyncio.to_thread(self.metrics.shutdown)  # the last OTLP export
        if self.tracing is not None:
            self.tracing.shutdown()  # exports the spans still buffered
        log.info("stopped", extra={"fields": {"event": "scheduler.stopped"}})


def _shifted(clock: Callable[[], datetime], offset: timedelta) -> Callable[[], datetime]:
    """`clock`, `offset` later (ServerSettings.test_cron_clock_offset)."""
    return lambda: clock() + offset
