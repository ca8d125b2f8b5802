"""The scheduler's rate limit options (--rate-limit, --tenant-rate-limit, --stream-limit), their
environment variables and config file keys, and the RateLimitPolicy they make. The limits
themselves: scheduler/domain/rate_limits.py; enforcing them: scheduler/auth/rate_limits.py."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from scheduler.domain.rate_limits import (
    DEFAULT_ROLE_RATES,
    DEFAULT_ROLE_STREAMS,
    LIMITED_ROLES,
    UNAUTHENTICATED,
    RateLimitPolicy,
)

ENV = {
    "rate_limits": "JOBSCHED_RATE_LIMITS",
    "tenant_rate_limits": "JOBSCHED_TENANT_RATE_LIMITS",
    "stream_limits": "JOBSCHED_STREAM_LIMITS",
}


def _checked(build: Callable[[str], RateLimitPolicy]) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            build(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return check


def _defaults() -> str:
    rates = ", ".join(f"{role} {DEFAULT_ROLE_RATES[role] or 'off'}" for role in LIMITED_ROLES)
    streams = ", ".join(
        f"{role} {DEFAULT_ROLE_STREAMS[role] or 'off'}"
        for role in LIMITED_ROLES
        if role != UNAUTHENTICATED
    )
    return f"defaults: rates {rates}; streams {streams}"


def add_rate_limit_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "rate limits (per caller and per replica: an API key, or with --auth off a peer "
        f"address as role anonymous; {_defaults()})"
    )
    group.add_argument(
        "--rate-limit",
        dest="rate_limits",
        action="append",
        default=[],
        metavar="ROLE=RATE[/BURST]",
        type=_checked(lambda v: RateLimitPolicy.parse(rate_limits=[v])),
        help="calls per second each caller of ROLE (viewer, submitter, operator, admin, "
        "executor, anonymous; unauthenticated: failed authentications per address) may make, "
        "in bursts of BURST (default 2 x RATE); 'off' for no limit; repeatable (env "
        "JOBSCHED_RATE_LIMITS, comma-separated)",
    )
    group.add_argument(
        "--tenant-rate-limit",
        dest="tenant_rate_limits",
        action="append",
        default=[],
        metavar="TENANT=RATE[/BURST]",
        type=_checked(lambda v: RateLimitPolicy.parse(tenant_rate_limits=[v])),
        help="the rate limit of each caller's calls for TENANT instead of its role's (a bucket "
        "of its own); repeatable (env JOBSCHED_TENANT_RATE_LIMITS)",
    )
    group.add_argument(
        "--stream-limit",
        dest="stream_limits",
        action="append",
        default=[],
        metavar="ROLE=COUNT",
        type=_checked(lambda v: RateLimitPolicy.parse(stream_limits=[v])),
        help="streams (watchers, executor connections, uploads) each caller of ROLE may hold "
        "open at once, or 'off'; repeatable (env JOBSCHED_STREAM_LIMITS)",
    )


def policy_of(args: argparse.Namespace) -> RateLimitPolicy:
    return RateLimitPolicy.parse(args.rate_limits, args.tenant_rate_limits, args.stream_limits)
