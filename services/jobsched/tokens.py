"""Bearer credentials (API keys, `jsk_...`, or JWTs, sent as they are) as the clients, the CLI and the executor send them:
`authorization: Bearer <token>` metadata on every call, and the shared `--token` option (env
JOBSCHED_TOKEN; prefer the environment or the config file's `token`: a flag's value is visible
to every local user in ps)."""

from __future__ import annotations

from typing import Any

AUTHORIZATION_KEY = "authorization"
TOKEN_ENV = {"token": "JOBSCHED_TOKEN"}


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata carrying `token` (nothing for None or empty)."""
    if token is None or not token.strip():
        return ()
    return ((AUTHORIZATION_KEY, f"Bearer {token.strip()}"),)


def add_token_option(parser: Any) -> None:
    parser.add_argument(
        "--token",
        metavar="KEY",
        help="API key (jsk_...) or JWT sent as authorization: Bearer KEY to schedulers running "
        "--auth required (env JOBSCHED_TOKEN, preferred: a flag is visible in ps)",
    )
