"""The scheduler's command line (`python -m scheduler`, `jobsched scheduler|dev|migrate`): its
options, their environment variables, and the ServerSettings they make.

Every option may also come from the `[scheduler]` table of a configuration file (`--config FILE`
or JOBSCHED_CONFIG; see jobsched/config.py): flag > environment > file > default.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from datetime import timedelta
from pathlib import Path

from jobsched.config import Program, add_config_option
from jobsched.metric_exporters import metric_exporters
from jobsched.options import add_log_level_option, non_negative, whole_number
from jobsched.tracing import TRACING_ENV, TracingSettings, add_tracing_options
from scheduler.auth.bootstrap import BOOTSTRAP_ENV, BOOTSTRAP_EXECUTOR_ENV, check_bootstrap_key
from scheduler.auth.options import (
    IDENTITY_ENV,
    add_identity_options,
    jwt_of,
    mtls_identities_of,
)
from scheduler.auth.rate_limit_options import ENV as RATE_LIMIT_ENV
from scheduler.auth.rate_limit_options import add_rate_limit_options, policy_of
from scheduler.domain.artifacts import S3Location
from scheduler.server import AUTH_MODES, DEFAULT_LISTEN, ServerSettings
from scheduler.tls import ServerTLS

DESCRIPTION = """Run a scheduler replica. Without --database-url or DATABASE_URL an embedded
PostgreSQL is started on a persistent data directory (--data-dir, JOBSCHED_DATA_DIR, default
./.jobsched). Migrations are applied first unless --no-migrate is given."""

# Options that have an environment variable; each is named in the option's help.
ENV = {
    "listen": "JOBSCHED_LISTEN",
    "database_url": "DATABASE_URL",
    "database_password_file": "JOBSCHED_DATABASE_PASSWORD_FILE",
    "data_dir": "JOBSCHED_DATA_DIR",
    "log_level": "JOBSCHED_LOG_LEVEL",
    "tls_cert": "JOBSCHED_SERVER_TLS_CERT",
    "tls_key": "JOBSCHED_SERVER_TLS_KEY",
    "tls_client_ca": "JOBSCHED_TLS_CLIENT_CA",
    "auth": "JOBSCHED_AUTH",
    "insecure": "JOBSCHED_INSECURE",
    "artifact_store": "JOBSCHED_ARTIFACT_STORE",
    "artifact_s3_endpoint": "JOBSCHED_ARTIFACT_S3_ENDPOINT",
    "metrics_listen": "JOBSCHED_METRICS_LISTEN",
    **IDENTITY_ENV,
    **TRACING_ENV,
    **RATE_LIMIT_ENV,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scheduler", description=DESCRIPTION)
    add_config_option(parser)
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help="host:port to serve gRPC on; port 0 picks a free one (env JOBSCHED_LISTEN, "
        f"default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (env DATABASE_URL); embedded PostgreSQL when absent. A password "
        "in it is visible to other local users (ps): prefer DATABASE_URL or "
        "--database-password-file",
    )
    parser.add_argument(
        "--database-password-file",
        type=Path,
        help="a file whose content is the database password, replacing the URL's (env "
        "JOBSCHED_DATABASE_PASSWORD_FILE)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".jobsched"),
        help="where the embedded PostgreSQL keeps its data (env JOBSCHED_DATA_DIR)",
    )
    parser.add_argument("--no-migrate", action="store_true", help="do not apply migrations")
    parser.add_argument("--migrate-only", action="store_true", help="apply migrations and exit")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="also run an executor with the built-in handlers, and print how to use it all",
    )
    add_log_level_option(parser)
    _add_timing(parser)
    _add_limits(parser)
    _add_tls(parser)
    _add_auth(parser)
    add_identity_options(parser)
    add_rate_limit_options(parser)
    _add_artifacts(parser)
    _add_metrics(parser)
    add_tracing_options(parser)
    return parser


def _add_auth(parser: argparse.ArgumentParser) -> None:
    auth = parser.add_argument_group(
        "authentication (API keys: jobsched keys; the first admin key from "
        f"{BOOTSTRAP_ENV}=jsk_... or `jobsched keys bootstrap`)"
    )
    auth.add_argument(
        "--auth",
        choices=AUTH_MODES,
        default="off",
        help="required: every RPC but health and reflection needs a credential "
        "(authorization: Bearer <key>); off: anyone reaching the port may do anything, so the "
        "scheduler then listens on loopback only unless --insecure (env JOBSCHED_AUTH, "
        "default off)",
    )
    auth.add_argument(
        "--insecure",
        action="store_true",
        help="allow --auth off on a non-loopback address, when something else guards the port "
        "(a NetworkPolicy, a private network; env JOBSCHED_INSECURE)",
    )


LOOPBACK_HOSTS = frozenset({"localhost", "::1", "[::1]"})


def is_loopback(listen: str) -> bool:
    """Whether a host:port listen address serves this machine only."""
    host = listen.rsplit(":", 1)[0].strip().lower()
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # 0.0.0.0 is an address; a name other than localhost may resolve anywhere


def exposure_problem(settings: ServerSettings, insecure: bool) -> str | None:
    """The line refusing to serve without authentication beyond this machine, if it applies."""
    if settings.auth == "off" and not insecure and not is_loopback(settings.listen):
        return (
            f"refusing to listen on {settings.listen} with --auth off: anyone reaching it could "
            "act for any tenant; use --auth required (API keys), a loopback address, or "
            "--insecure if something else guards the port"
        )
    return None


def _add_tls(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group(
        "TLS (plaintext without; the files are read again on SIGHUP or when they change)"
    )
    tls.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="serve TLS with this certificate chain (PEM; env JOBSCHED_SERVER_TLS_CERT)",
    )
    tls.add_argument(
        "--tls-key",
        type=Path,
        metavar="FILE",
        help="its private key (PEM; env JOBSCHED_SERVER_TLS_KEY)",
    )
    tls.add_argument(
        "--tls-client-ca",
        type=Path,
        metavar="FILE",
        help="mutual TLS: require client certificates signed by these CAs (PEM; env "
        "JOBSCHED_TLS_CLIENT_CA)",
    )


def tls_of(args: argparse.Namespace) -> ServerTLS | None:
    """The ServerTLS the flags ask for, checked now (ValueError, one line, when unusable)."""
    if args.tls_cert is None and args.tls_key is None:
        if args.tls_client_ca is not None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    tls = ServerTLS(args.tls_cert, args.tls_key, args.tls_client_ca)
    tls.load()  # TLSError (a ValueError) naming the file
    return tls


def _add_timing(parser: argparse.ArgumentParser) -> None:
    timing = parser.add_argument_group("timing (seconds; the defaults suit production)")
    defaults = ServerSettings()
    for flag, value, text in (
        ("--heartbeat-interval", defaults.heartbeat_interval, "heartbeats on executor streams"),
        ("--lease", defaults.lease.total_seconds(), "lease of a running attempt"),
        ("--ack-timeout", defaults.ack_timeout.total_seconds(), "to acknowledge an assignment"),
        ("--reconnect-grace", defaults.reconnect_grace.total_seconds(), "for a lost executor"),
        ("--cron-poll-interval", defaults.cron_poll_interval, "the leader's cron safety poll"),
        ("--leader-tick", defaults.leader_tick, "followers' leader election probe interval"),
        ("--leader-renew-timeout", defaults.leader_renew_timeout, "a leader steps down after"),
        (
            "--rescue-interval",
            defaults.rescue_interval,
            "longest sleep of the lease rescue and timeout backstop (it wakes at the earliest "
            "deadline)",
        ),
        ("--timeout-grace", defaults.timeout_grace.total_seconds(), "backstop after a timeout"),
        ("--presence-interval", defaults.presence_interval, "replica presence reports"),
        ("--health-interval", defaults.health_interval, "database health checks"),
    ):
        timing.add_argument(flag, type=float, default=value, help=f"{text} (default {value:g})")
    timing.add_argument(
        "--test-cron-clock-offset",
        type=float,
        default=defaults.test_cron_clock_offset,
        # Test only (ServerSettings.test_cron_clock_offset): not shown in --help.
        help=argparse.SUPPRESS,
    )
    timing.add_argument(
        "--poll-interval",
        type=float,
        default=defaults.poll_interval,
        help="the dispatcher's safety poll (default 5 with LISTEN/NOTIFY, which the scheduler "
        "always uses; 1 without)",
    )
    timing.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=None,
        help="an executor silent this long has its stream ended, and an attempt missing from "
        "its heartbeats this long is failed (default 4 x heartbeat interval; it gets no "
        "assignments after 2 silent intervals already)",
    )
    timing.add_argument(
        "--rescue-recovery-grace",
        type=float,
        default=None,
        help="after the database was unreachable, the lease rescue waits this long for "
        "executors to renew leases and re-send results (default 3 x heartbeat interval + 1)",
    )
    timing.add_argument(
        "--leader-renew-interval",
        type=float,
        default=defaults.leader_renew_interval,
        help="how often the leader renews (default max(leader tick, renew timeout / 3))",
    )


def _add_limits(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group("limits")
    defaults = ServerSettings()
    limits.add_argument(
        "--max-releases",
        type=int,
        default=defaults.max_releases,
        help="hand-backs without running (ack timeouts, releases) a job survives; the next "
        f"ends it DEAD (default {defaults.max_releases})",
    )
    limits.add_argument(
        "--max-concurrent-rpcs",
        type=whole_number,
        default=defaults.max_concurrent_rpcs,
        help="unary calls in progress at once; past it a call is refused at once "
        f"(RESOURCE_EXHAUSTED, OVERLOADED) (default {defaults.max_concurrent_rpcs})",
    )
    limits.add_argument(
        "--max-streams",
        type=whole_number,
        default=defaults.max_streams,
        help=f"long-lived streams (executors, watchers) at once (default {defaults.max_streams})",
    )
    limits.add_argument(
        "--max-connection-age",
        type=non_negative,
        default=0.0,
        help="seconds after which a client connection is ended gracefully, so that executors "
        "and clients reconnect and spread across replicas (0, the default: never)",
    )
    limits.add_argument(
        "--retention-days",
        type=non_negative,
        default=defaults.retention.total_seconds() / 86400,
        help="finished jobs of queues without a retention of their own are deleted this many "
        "days after they finished, with their history (0 keeps them forever; default "
        f"{defaults.retention.total_seconds() / 86400:g})",
    )
    limits.add_argument(
        "--audit-retention-days",
        type=non_negative,
        default=defaults.audit_retention.total_seconds() / 86400,
        help="audit events are deleted this many days after they were recorded (0 keeps them "
        f"forever; default {defaults.audit_retention.total_seconds() / 86400:g})",
    )


def _s3_url(value: str) -> str:
    if value:
        try:
            S3Location.parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _add_artifacts(parser: argparse.ArgumentParser) -> None:
    artifacts = parser.add_argument_group("artifacts (files uploaded by handlers)")
    defaults = ServerSettings()
    artifacts.add_argument(
        "--artifact-store",
        type=_s3_url,
        default=defaults.artifact_store,
        help="s3://bucket/prefix to keep artifact content in S3-compatible object storage "
        "(credentials and region from the standard AWS environment variables); default: in "
        "PostgreSQL (env JOBSCHED_ARTIFACT_STORE)",
    )
    artifacts.add_argument(
        "--artifact-s3-endpoint",
        default=defaults.artifact_s3_endpoint,
        help="URL of the S3 endpoint (MinIO, Ceph, ...; default AWS_ENDPOINT_URL_S3, "
        "AWS_ENDPOINT_URL or AWS itself) (env JOBSCHED_ARTIFACT_S3_ENDPOINT)",
    )
    artifacts.add_argument(
        "--max-artifact-bytes",
        type=whole_number,
        default=defaults.max_artifact_bytes,
        help=f"largest artifact (default {defaults.max_artifact_bytes}: 1 GiB)",
    )
    artifacts.add_argument(
        "--max-job-artifact-bytes",
        type=whole_number,
        default=defaults.max_job_artifact_bytes,
        help=f"all artifacts of one job together (default {defaults.max_job_artifact_bytes}: "
        "4 GiB)",
    )


def _add_metrics(parser: argparse.ArgumentParser) -> None:
    metrics = parser.add_argument_group("metrics (off unless --metrics-listen is given)")
    defaults = ServerSettings()
    metrics.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=None,
        help="serve Prometheus metrics (/metrics) and the health endpoints (/healthz, /readyz) "
        "over plain HTTP on this address, e.g. 127.0.0.1:9464 (env JOBSCHED_METRICS_LISTEN; "
        "default: off). OTEL_METRICS_EXPORTER=otlp pushes them too, with or without it",
    )
    metrics.add_argument(
        "--queue-depth-interval",
        type=_positive_seconds,
        default=defaults.queue_depth_interval,
        help="seconds between the leader's counts of the active jobs per queue and state "
        f"(jobsched_queue_jobs; default {defaults.queue_depth_interval:g})",
    )


def _positive_seconds(value: str) -> float:
    number = non_negative(value)
    if number == 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number above 0")
    return number


PROGRAM = Program("scheduler", build_parser, ENV)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return PROGRAM.resolve(argv).args


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """The ServerSettings of a parsed command line (ValueError when they do not fit together)."""
    metric_exporters()  # ValueError for an OTEL_METRICS_EXPORTER exporter unknown here
    return ServerSettings(
        listen=args.listen,
        heartbeat_interval=args.heartbeat_interval,
        lease=timedelta(seconds=args.lease),
        ack_timeout=timedelta(seconds=args.ack_timeout),
        reconnect_grace=timedelta(seconds=args.reconnect_grace),
        poll_interval=args.poll_interval,
        cron_poll_interval=args.cron_poll_interval,
        test_cron_clock_offset=args.test_cron_clock_offset,
        leader_tick=args.leader_tick,
        leader_renew_timeout=args.leader_renew_timeout,
        leader_renew_interval=args.leader_renew_interval,
        rescue_interval=args.rescue_interval,
        timeout_grace=timedelta(seconds=args.timeout_grace),
        presence_interval=args.presence_interval,
        health_interval=args.health_interval,
        heartbeat_timeout=_seconds(args.heartbeat_timeout),
        rescue_recovery_grace=_seconds(args.rescue_recovery_grace),
        max_releases=args.max_releases,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
        max_streams=args.max_streams,
        max_connection_age=_seconds(args.max_connection_age or None),
        retention=timedelta(days=args.retention_days),
        audit_retention=timedelta(days=args.audit_retention_days),
        tls=tls_of(args),
        auth=args.auth,
        bootstrap_key=_bootstrap_key(),
        jwt=jwt_of(args),
        mtls_identities=mtls_identities_of(args),
        bootstrap_executor_key=_bootstrap_key(BOOTSTRAP_EXECUTOR_ENV),
        rate_limits=policy_of(args),
        artifact_store=args.artifact_store,
        artifact_s3_endpoint=args.artifact_s3_endpoint,
        max_artifact_bytes=args.max_artifact_bytes,
        max_job_artifact_bytes=args.max_job_artifact_bytes,
        metrics_listen=args.metrics_listen or None,
        queue_depth_interval=args.queue_depth_interval,
        tracing=TracingSettings.from_args(args, "jobsched-scheduler"),
    )


def _bootstrap_key(variable: str = BOOTSTRAP_ENV) -> str | None:
    """JOBSCHED_BOOTSTRAP_KEY (or _EXECUTOR_KEY), checked (an environment variable only: a
    secret in a flag would be visible to every local user in ps, and in a file it would be in
    the config)."""
    value = os.environ.get(variable, "").strip()
    return check_bootstrap_key(value, variable) if value else None


def _seconds(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)
