"""Database URLs as the scheduler prints them, and passwords kept out of them.

A password given in `--database-url` is visible to every local user in `ps`; `DATABASE_URL`
(the environment is private to the process) or a password file (`--database-password-file`,
whose content replaces the URL's password) are the ways to give one. Whatever prints or logs a
URL prints `masked(url)`."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# libpq also takes the password as a query parameter (?password=...; sslpassword for a key).
_SECRET_QUERY_KEYS = ("password", "sslpassword")
UNPARSABLE = "<a database URL that does not parse>"


def parse_database_url(url: str) -> URL:
    """The parsed URL; ValueError that never quotes it (it may hold a password) otherwise."""
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        problem = "its port is not a number" if isinstance(exc, ValueError) else "not a URL"
        raise ValueError(
            f"the database URL (--database-url, DATABASE_URL) is not a PostgreSQL URL: {problem}"
            " (postgresql://USER@HOST:PORT/DATABASE)"
        ) from None


def masked(url: str) -> str:
    """`url` with its password (if any, in the user part or the query) shown as ***."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return UNPARSABLE
    hidden = {key: "***" for key in _SECRET_QUERY_KEYS if key in parsed.query}
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def with_password_file(url: str, path: Path) -> str:
    """`url` with the password read from `path` (the file's content without its final line
    break). Raises ValueError for an unreadable or empty file."""
    try:
        password = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read the database password file {path}: {exc.strerror}") from exc
    if not password:
        raise ValueError(f"the database password file {path} is empty")
    return parse_database_url(url).set(password=password).render_as_string(hide_password=False)
