"""The dashboard's command line (`python -m dashboard`, `jobsched dashboard`) and its
environment variables; every option may also come from the `[dashboard]` table of a
configuration file: flag > environment > file > default."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from jobsched.client import DEFAULT_ADDRESS
from jobsched.config import Program, add_config_option
from jobsched.options import add_log_level_option, seconds
from jobsched.tls import TLS_ENV, ClientTLS, add_tls_options, tls_from_args

DEFAULT_LISTEN = "127.0.0.1:8080"

ENV = {
    "listen": "JOBSCHED_DASHBOARD_LISTEN",
    "schedulers": "JOBSCHED_ADDRESS",
    "tenant": "JOBSCHED_TENANT",
    "session_secret": "JOBSCHED_DASHBOARD_SECRET",
    "log_level": "JOBSCHED_LOG_LEVEL",
    **TLS_ENV,
}


@dataclass(frozen=True, slots=True)
class DashboardSettings:
    """What the app needs; tests build it directly."""

    schedulers: tuple[str, ...] = (DEFAULT_ADDRESS,)
    tenant: str | None = None
    # Signs the session cookie; a random one (sessions end with the process) when empty.
    session_secret: str = ""
    session_idle: float = 12 * 3600.0
    # Set the cookie's Secure attribute (behind HTTPS).
    secure_cookies: bool = False
    call_timeout: float = 10.0
    tls: ClientTLS | None = None


def host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dashboard",
        description="Serve the jobsched web dashboard: a gRPC client of the schedulers.",
    )
    add_config_option(parser)
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="where to serve HTTP (env JOBSCHED_DASHBOARD_LISTEN; default %(default)s, loopback "
        "only: put it behind a TLS proxy to serve it beyond this machine)",
    )
    parser.add_argument(
        "--scheduler",
        action="append",
        dest="schedulers",
        metavar="ADDR[,ADDR]",
        help="scheduler host:port, several separated by commas or repeated to fail over between "
        f"replicas (env JOBSCHED_ADDRESS; default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--tenant", help="tenant of every call unless the user picks one (env JOBSCHED_TENANT)"
    )
    parser.add_argument(
        "--session-secret",
        metavar="SECRET",
        default="",
        help="signs the session cookies; set it to keep sessions across restarts (env "
        "JOBSCHED_DASHBOARD_SECRET; default: a random one per process)",
    )
    parser.add_argument(
        "--session-idle",
        type=seconds,
        default=12 * 3600.0,
        metavar="SECONDS",
        help="a session unused this long is signed out (default 12 h)",
    )
    parser.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (when served over HTTPS)",
    )
    add_tls_options(parser)
    add_log_level_option(parser)
    return parser


PROGRAM = Program("dashboard", build_parser, ENV)


def settings_of(args: argparse.Namespace) -> DashboardSettings:
    addresses = [
        part.strip() for item in args.schedulers or [DEFAULT_ADDRESS] for part in item.split(",")
    ]
    return DashboardSettings(
        schedulers=tuple(a for a in addresses if a),
        tenant=args.tenant or None,
        session_secret=args.session_secret or "",
        session_idle=args.session_idle,
        secure_cookies=args.secure_cookies,
        tls=tls_from_args(args),
    )
