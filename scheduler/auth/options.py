"""The scheduler's command-line options for JWT bearer tokens and mTLS identities, their
environment variables, and the settings they make (used by scheduler/flags.py). Like every
option, each may also come from the `[scheduler]` table of the configuration file
(`jwt_jwks = "https://idp.example/.well-known/jwks.json"`, `mtls_identities = "ids.toml"`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from jobsched.options import non_negative
from scheduler.auth.jwks import JwksError, JwksSource
from scheduler.auth.jwt import (
    ALGORITHMS,
    DEFAULT_ALGORITHMS,
    DEFAULT_JWKS_REFRESH,
    DEFAULT_LEEWAY,
    DEFAULT_PERMISSIONS_CLAIM,
    JwtSettings,
)
from scheduler.auth.mtls import MtlsIdentity, load_identities

IDENTITY_ENV = {
    "jwt_jwks": "JOBSCHED_JWT_JWKS",
    "jwt_issuer": "JOBSCHED_JWT_ISSUER",
    "jwt_audience": "JOBSCHED_JWT_AUDIENCE",
    "jwt_leeway": "JOBSCHED_JWT_LEEWAY",
    "jwt_permissions_claim": "JOBSCHED_JWT_PERMISSIONS_CLAIM",
    "jwt_algorithms": "JOBSCHED_JWT_ALGORITHMS",
    "jwt_jwks_refresh": "JOBSCHED_JWT_JWKS_REFRESH",
    "mtls_identities": "JOBSCHED_MTLS_IDENTITIES",
}


def _positive(value: str) -> float:
    number = non_negative(value)
    if number == 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number above 0")
    return number


def _algorithm(value: str) -> str:
    if value not in ALGORITHMS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not allowed (asymmetric only: {', '.join(sorted(ALGORITHMS))})"
        )
    return value


def add_identity_options(parser: argparse.ArgumentParser) -> None:
    jwt = parser.add_argument_group(
        "JWT bearer tokens (with --auth required; a bearer token not starting with jsk_ is a JWT)"
    )
    jwt.add_argument(
        "--jwt-jwks",
        metavar="FILE|URL",
        help="verify JWTs against this JSON Web Key Set: a file, or an https:// URL read again "
        "every --jwt-jwks-refresh seconds and on an unknown key id (env JOBSCHED_JWT_JWKS)",
    )
    jwt.add_argument(
        "--jwt-issuer",
        metavar="ISSUER",
        help="the iss every token must have (required; env JOBSCHED_JWT_ISSUER)",
    )
    jwt.add_argument(
        "--jwt-audience",
        metavar="AUDIENCE",
        help="the aud every token must include (required; env JOBSCHED_JWT_AUDIENCE)",
    )
    jwt.add_argument(
        "--jwt-leeway",
        metavar="SECONDS",
        type=non_negative,
        default=DEFAULT_LEEWAY,
        help="seconds of clock skew allowed on exp, nbf and iat (env JOBSCHED_JWT_LEEWAY, "
        f"default {DEFAULT_LEEWAY:g})",
    )
    jwt.add_argument(
        "--jwt-permissions-claim",
        metavar="CLAIM",
        default=DEFAULT_PERMISSIONS_CLAIM,
        help='the claim listing "tenant:role" grants, e.g. ["alpha:submitter", "*:viewer"]; '
        "a dotted name reaches into nested claims (env JOBSCHED_JWT_PERMISSIONS_CLAIM, default "
        f"{DEFAULT_PERMISSIONS_CLAIM})",
    )
    jwt.add_argument(
        "--jwt-algorithm",
        dest="jwt_algorithms",
        metavar="ALG",
        action="append",
        type=_algorithm,
        help="an algorithm tokens may be signed with (repeatable; env JOBSCHED_JWT_ALGORITHMS, "
        f"comma-separated; default {', '.join(DEFAULT_ALGORITHMS)}; never none or HS*)",
    )
    jwt.add_argument(
        "--jwt-jwks-refresh",
        metavar="SECONDS",
        type=_positive,
        default=DEFAULT_JWKS_REFRESH,
        help="seconds between reads of the JWKS (env JOBSCHED_JWT_JWKS_REFRESH, default "
        f"{DEFAULT_JWKS_REFRESH:g})",
    )
    mtls = parser.add_argument_group("mTLS identities (with --auth required and --tls-client-ca)")
    mtls.add_argument(
        "--mtls-identities",
        type=Path,
        metavar="FILE",
        help="TOML rules mapping client certificates (SAN or CN) to a principal, tenants and a "
        "role ([[identity]] match, field, role, tenants, name); used for calls without a "
        "bearer credential (env JOBSCHED_MTLS_IDENTITIES)",
    )


def jwt_of(args: argparse.Namespace) -> JwtSettings | None:
    """The JwtSettings the options ask for (ValueError, one line, when they do not fit)."""
    if args.jwt_jwks is None:
        for given, flag in (
            (args.jwt_issuer, "--jwt-issuer"),
            (args.jwt_audience, "--jwt-audience"),
        ):
            if given is not None:
                raise ValueError(f"{flag} needs --jwt-jwks (where the token signing keys are)")
        return None
    settings = JwtSettings(
        jwks=args.jwt_jwks,
        issuer=args.jwt_issuer or "",
        audience=args.jwt_audience or "",
        leeway=args.jwt_leeway,
        permissions_claim=args.jwt_permissions_claim,
        algorithms=tuple(args.jwt_algorithms or DEFAULT_ALGORITHMS),
        jwks_refresh=args.jwt_jwks_refresh,
    )
    source = JwksSource(settings.jwks)
    if not source.is_url:
        try:
            source.read()  # a file is checked now; a URL at start (the server may be down)
        except JwksError as exc:
            raise ValueError(f"--jwt-jwks {exc}") from None
    return settings


def mtls_identities_of(args: argparse.Namespace) -> tuple[MtlsIdentity, ...]:
    if args.mtls_identities is None:
        return ()
    if args.tls_client_ca is None:
        raise ValueError("--mtls-identities needs --tls-client-ca (client certificates)")
    return load_identities(args.mtls_identities)
