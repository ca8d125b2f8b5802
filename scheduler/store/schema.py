"""Table metadata of the job store. Alembic migrations are the schema authority; this metadata
mirrors them so that `alembic check` can prove there is no drift (tests create nothing from it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from scheduler.domain.setting_sources import STORED_PATTERN as SETTING_SOURCES_PATTERN
from scheduler.domain.states import JobState

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

job_state = Enum(
    *[s.value for s in JobState],
    name="job_state",
    metadata=metadata,
    validate_strings=True,
)

TERMINAL_SQL = "state IN ('succeeded', 'dead', 'cancelled')"
ACTIVE_SQL = "state IN ('waiting', 'scheduled', 'queued', 'running')"
# When a running job's timeout ends (ix_jobs_timeout_deadline, the timeout backstop).
TIMEOUT_DEADLINE_SQL = "timezone('UTC', timezone('UTC', started_at) + timeout)"

jobs = Table(
    "jobs",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("queue", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False, server_default=text("''::bytea")),
    Column("priority", SmallInteger, nullable=False),
    Column("state", job_state, nullable=False),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False),
    Column("run_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("progress_percent", Double, nullable=False, server_default=text("0")),
    Column("progress_step", Text, nullable=False, server_default=text("''")),
    Column("progress_message", Text, nullable=False, server_default=text("''")),
    Column("progress_eta", DateTime(timezone=True)),
    Column("progress_updated_at", DateTime(timezone=True)),
    Column("last_error", Text),
    Column("result", LargeBinary),
    Column("executor", Text),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("labels", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("idempotency_key", Text),
    Column("cancel_requested_at", DateTime(timezone=True)),
    Column("timeout", Interval),
    # The job's retry policy, resolved at submit (its own fields, its queue's, the global ones).
    Column(
        "retry_initial_backoff",
        Interval,
        nullable=False,
        server_default=text("'00:00:01'::interval"),
    ),
    Column("retry_multiplier", Double, nullable=False, server_default=text("2.0")),
    Column(
        "retry_max_backoff", Interval, nullable=False, server_default=text("'00:10:00'::interval")
    ),
    Column("retry_jitter", Double, nullable=False, server_default=text("0.1")),
    # Dependencies not yet succeeded; a WAITING job moves on when it reaches 0.
    Column("pending_dependencies", Integer, nullable=False, server_default=text("0")),
    # Per-job sequence of the last event; the next event takes event_seq + 1 in the same UPDATE.
    Column("event_seq", BigInteger, nullable=False, server_default=text("0")),
    # Attempts handed back without running (ack reverts, releases); bounded, then DEAD (0010).
    Column("releases", Integer, nullable=False, server_default=text("0")),
    # Where max_attempts, timeout and the retry fields came from at submit, a letter each
    # (scheduler/domain/setting_sources.py); NULL for jobs submitted before 0013.
    Column("setting_sources", Text),
    # The W3C traceparent of the submit (0016): the executors' attempt spans continue it.
    # NULL when the submitter sent none and the scheduler does not trace.
    Column("trace_context", Text),
    CheckConstraint("attempt >= 0", name="attempt_non_negative"),
    CheckConstraint(
        f"setting_sources IS NULL OR setting_sources ~ '{SETTING_SOURCES_PATTERN}'",
        name="setting_sources_known",
    ),
    CheckConstraint("releases >= 0", name="releases_non_negative"),
    CheckConstraint(
        "trace_context IS NULL OR length(trace_context) <= 55", name="trace_context_bounded"
    ),
    CheckConstraint("pending_dependencies >= 0", name="pending_dependencies_non_negative"),
    CheckConstraint(
        "retry_initial_backoff > interval '0' AND retry_max_backoff >= retry_initial_backoff "
        "AND retry_multiplier >= 1 AND retry_jitter >= 0 AND retry_jitter <= 1",
        name="retry_policy_valid",
    ),
    CheckConstraint("max_attempts >= 1", name="max_attempts_positive"),
    CheckConstraint("attempt <= max_attempts", name="attempt_within_max"),
    CheckConstraint("priority BETWEEN 0 AND 100", name="priority_range"),
    CheckConstraint("progress_percent BETWEEN 0 AND 100", name="progress_range"),
    CheckConstraint("event_seq >= 0", name="event_seq_non_negative"),
    CheckConstraint(f"(finished_at IS NOT NULL) = ({TERMINAL_SQL})", name="finished_iff_terminal"),
    UniqueConstraint("tenant", "idempotency_key"),
    # The claim path: queued jobs of a queue in priority, run_at, id order.
    Index(
        "ix_jobs_claim",
        "queue",
        text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=text("state = 'queued'"),
    ),
    # ListActiveJobs: keyset over (created_at, id) among active jobs only.
    Index("ix_jobs_active", "tenant", "created_at", "id", postgresql_where=text(ACTIVE_SQL)),
    # GetJobHistory: keyset over (finished_at, id) descending among terminal jobs.
    Index(
        "ix_jobs_history",
        "tenant",
        text("finished_at DESC"),
        text("id DESC"),
        postgresql_where=text("finished_at IS NOT NULL"),
    ),
    Index("ix_jobs_running_executor", "executor", postgresql_where=text("state = 'running'")),
    Index("ix_jobs_lease_expiry", "lease_expires_at", postgresql_where=text("state = 'running'")),
    Index("ix_jobs_scheduled_run_at", "run_at", postgresql_where=text("state = 'scheduled'")),
    # The claim across queues: queued jobs in its order, and the starved ones oldest first.
    Index(
        "ix_jobs_claim_priority",
        text("priority DESC"),
        "run_at",
        "id",
        postgresql_where=text("state = 'queued'"),
    ),
    Index("ix_jobs_claim_starved", "run_at", "id", postgresql_where=text("state = 'queued'")),
    # The running jobs of a queue (concurrency limits, waiting reasons).
    Index("ix_jobs_running_queue", "tenant", "queue", postgresql_where=text("state = 'running'")),
    # The timeout backstop: the deadline of running jobs with a timeout, computed in UTC (the
    # expression must be IMMUTABLE; timestamptz + interval is not).
    Index(
        "ix_jobs_timeout_deadline",
        text(f"({TIMEOUT_DEADLINE_SQL})"),
        postgresql_where=text("state = 'running' AND timeout IS NOT NULL"),
    ),
    # The retention sweep: each queue's finished jobs, oldest first (0011).
    Index(
        "ix_jobs_retention",
        "tenant",
        "queue",
        "finished_at",
        postgresql_where=text("finished_at IS NOT NULL"),
    ),
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column(
        "job_id",
        UUID(as_uuid=False),
        ForeignKey("jobs.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("seq", BigInteger, nullable=False),
    Column("from_state", job_state),
    Column("to_state", job_state, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("executor", Text),
    Column("reason", Text, nullable=False, server_default=text("''")),
    Column("actor", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("seq >= 1", name="seq_positive"),
    UniqueConstraint("job_id", "seq"),
)

# At most 1000 lines per attempt plus a truncation marker (scheduler/domain/log_lines.py); the
# primary key is also the index of every read (by attempt, then line number).
job_logs = Table(
    "job_logs",
    metadata,
    Column(
        "job_id",
        UUID(as_uuid=False),
        ForeignKey("jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("attempt", Integer, primary_key=True),
    Column("line_number", Integer, primary_key=True),
    Column("line", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("attempt >= 1", name="attempt_positive"),
    CheckConstraint("line_number >= 1", name="line_number_positive"),
)

# One row: the fencing epoch of the current leader (scheduler/leader.py).
leadership = Table(
    "leadership",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("leader", Text, nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("renewed_at", DateTime(timezone=True), nullable=False),
    Column("backend_pid", Integer, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("epoch >= 1", name="epoch_positive"),
)

# Every replica's presence, refreshed while it runs (GetClusterStatus).
scheduler_replicas = Table(
    "scheduler_replicas",
    metadata,
    Column("id", Text, primary_key=True),
    Column("address", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("executors", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
)

# Per-queue settings (QueueService); a queue never configured has no row.
queues = Table(
    "queues",
    metadata,
    Column("tenant", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("default_max_attempts", Integer),
    Column("default_timeout", Interval),
    Column("retry_initial_backoff", Interval),
    Column("retry_multiplier", Double),
    Column("retry_max_backoff", Interval),
    Column("retry_jitter", Double),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("max_concurrency", Integer),
    # How long finished jobs are kept: NULL the global default, 0 forever (0011).
    Column("retention", Interval),
    CheckConstraint(
        "default_max_attempts IS NULL OR default_max_attempts BETWEEN 1 AND 100",
        name="default_max_attempts_range",
    ),
    CheckConstraint(
        "max_concurrency IS NULL OR max_concurrency >= 1", name="max_concurrency_positive"
    ),
    CheckConstraint(
        "retention IS NULL OR retention >= interval '0'", name="retention_non_negative"
    ),
)

# Per-job-type settings (JobTypeService, 0013): the defaults of a type's jobs, between the
# job's own values and its queue's. A type without settings has no row.
job_types = Table(
    "job_types",
    metadata,
    Column("tenant", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("max_attempts", Integer),
    Column("timeout", Interval),
    Column("retry_initial_backoff", Interval),
    Column("retry_multiplier", Double),
    Column("retry_max_backoff", Interval),
    Column("retry_jitter", Double),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "max_attempts IS NULL OR max_attempts BETWEEN 1 AND 100", name="max_attempts_range"
    ),
    CheckConstraint("timeout IS NULL OR timeout > interval '0'", name="timeout_positive"),
    CheckConstraint(
        "(retry_initial_backoff IS NULL OR retry_initial_backoff > interval '0') "
        "AND (retry_multiplier IS NULL OR retry_multiplier >= 1) "
        "AND (retry_max_backoff IS NULL OR retry_max_backoff > interval '0') "
        "AND (retry_jitter IS NULL OR retry_jitter BETWEEN 0 AND 1)",
        name="retry_policy_valid",
    ),
)

# A job waits for these: an edge per (job, dependency); dependents found by index.
job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column(
        "job_id", UUID(as_uuid=False), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    ),
    Column(
        "depends_on",
        UUID(as_uuid=False),
        ForeignKey("jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    CheckConstraint("job_id <> depends_on", name="not_self"),
    Index("ix_job_dependencies_depends_on", "depends_on"),
)

schedules = Table(
    "schedules",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("tenant", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("cron", Text, nullable=False),
    Column("time_zone", Text, nullable=False),
    Column("job_template", LargeBinary, nullable=False),
    Column("overlap_policy", Text, nullable=False),
    Column("catchup_policy", Text, nullable=False),
    Column("catchup_window", Interval, nullable=False),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("next_fire_at", DateTime(timezone=True), nullable=False),
    Column("last_fire_at", DateTime(timezone=True)),
    Column("last_job_id", UUID(as_uuid=False)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    CheckConstraint(
        "overlap_policy IN ('allow', 'skip', 'cancel_previous')", name="overlap_policy_known"
    ),
    CheckConstraint("catchup_policy IN ('none', 'latest', 'all')", name="catchup_policy_known"),
    UniqueConstraint("tenant", "name"),
    Index("ix_schedules_due", "next_fire_at", postgresql_where=text("NOT paused")),
)

# One row per schedule and fire time: the primary key makes each fire happen once.
schedule_fires = Table(
    "schedule_fires",
    metadata,
    Column(
        "schedule_id",
        UUID(as_uuid=False),
        ForeignKey("schedules.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("fire_time", DateTime(timezone=True), primary_key=True),
    Column("job_id", UUID(as_uuid=False)),
    Column("outcome", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("outcome IN ('submitted', 'skipped', 'triggered')", name="outcome_known"),
)

# Random keys shared by the replicas, made by the migrations (0010): `executor_session` signs the
# session tokens of executors.
cluster_secrets = Table(
    "cluster_secrets",
    metadata,
    Column("name", Text, primary_key=True),
    Column("secret", LargeBinary, nullable=False),
    CheckConstraint("length(secret) >= 32", name="long_enough"),
)


# Files a job's handlers uploaded (0012): one per (job, name), a later attempt's replacing an
# earlier one's. `object_key` is the S3 key, or NULL when the content is in artifact_chunks.
artifacts = Table(
    "artifacts",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column(
        "job_id", UUID(as_uuid=False), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    ),
    Column("name", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("object_key", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("attempt >= 1", name="attempt_positive"),
    CheckConstraint("size_bytes >= 0", name="size_non_negative"),
    CheckConstraint("length(sha256) = 64", name="sha256_hex"),
    UniqueConstraint("job_id", "name"),
)

# The content of PostgreSQL-stored artifacts, 1 MiB a row (STORAGE EXTERNAL: not compressed).
artifact_chunks = Table(
    "artifact_chunks",
    metadata,
    Column(
        "artifact_id",
        UUID(as_uuid=False),
        ForeignKey("artifacts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
    CheckConstraint("seq >= 0", name="seq_non_negative"),
)

# S3 objects to delete: recorded by the artifacts_object_deleted trigger (and by an upload before
# it writes its object), drained by the leader's artifact janitor.
artifact_deletions = Table(
    "artifact_deletions",
    metadata,
    Column("object_key", Text, primary_key=True),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Index("ix_artifact_deletions_not_before", "not_before"),
)

# API keys (scheduler/auth): only the SHA-256 digest of each secret is stored, unique, which is
# also how a presented key is found. `tenants` holds '*' for a key acting for every tenant.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("tenants", ARRAY(Text), nullable=False),
    Column("digest", LargeBinary, nullable=False),
    Column("prefix", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    CheckConstraint(
        "role IN ('viewer', 'submitter', 'operator', 'admin', 'executor')", name="role_known"
    ),
    CheckConstraint("cardinality(tenants) >= 1", name="has_tenants"),
    CheckConstraint("length(digest) = 32", name="digest_sha256"),
    CheckConstraint("char_length(name) BETWEEN 1 AND 200", name="name_length"),
    UniqueConstraint("digest"),
    # ListApiKeys pages newest first.
    Index("ix_api_keys_created_at_id", "created_at", "id"),
)

# The audit log (scheduler/auth/audit_*.py): append-only, enforced by the trigger of migration
# 0015 (only the retention sweep deletes, and only rows older than the cutoff it names).
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("principal", Text, nullable=False),
    Column("principal_name", Text, nullable=False),
    Column("tenant", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("peer", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    CheckConstraint("char_length(action) BETWEEN 1 AND 100", name="action_length"),
    CheckConstraint("char_length(target) <= 300", name="target_length"),
    CheckConstraint("char_length(tenant) <= 100", name="tenant_length"),
    CheckConstraint("code ~ '^[A-Z_]+$'", name="code_known"),
    Index("ix_audit_events_occurred_at_id", "occurred_at", "id"),
    Index("ix_audit_events_principal", "principal", "occurred_at", "id"),
    Index("ix_audit_events_target", "target", "occurred_at", "id"),
)
