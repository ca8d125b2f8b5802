"""Database URLs as the scheduler prints them, and passwords kept out of them.

A password given in `--database-url` is visible to every local user in `ps`; `DATABASE_URL`
(the environment is private to the process) or a password file (`--database-password-file`,
whose content replaces the URL's password) are the ways to give one. Whatever prints or logs a
URL prints `masked(url)`."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url


def masked(url: str) -> str:
    """`url` with its password (if any) shown as ***."""
    return make_url(url).render_as_string(hide_password=True)


def with_password_file(url: str, path: Path) -> str:
    """`url` with the password read from `path` (the file's content without its final line
    break). Raises ValueError for an unreadable or empty file."""
    try:
        password = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"cannot read the database password file {path}: {exc.strerror}") from exc
    if not password:
        raise ValueError(f"the database password file {path} is empty")
    return make_url(url).set(password=password).render_as_string(hide_password=False)
