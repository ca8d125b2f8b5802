"""What the scheduler prints: the dev banner names a non-default address in its commands, and
no URL it prints shows a password; the password file's content goes into the URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from scheduler.__main__ import database_url, dev_banner
from scheduler.flags import parse_args
from scheduler.store.credentials import masked
from scheduler.store.preflight import where

URL = "postgresql://jobs:s3cret@db.example:5433/jobsched"


def test_the_banner_names_a_non_default_address_in_every_command() -> None:
    banner = dev_banner("127.0.0.1:6000", URL)
    commands = [line for line in banner.splitlines() if ".venv/bin/jobsched" in line]
    assert len(commands) == 3
    assert all(".venv/bin/jobsched --address 127.0.0.1:6000 " in line for line in commands)


def test_the_banner_leaves_the_default_address_out() -> None:
    banner = dev_banner("127.0.0.1:50051", URL)
    assert "--address" not in banner
    assert "127.0.0.1:50051" in banner


def test_the_banner_masks_the_password() -> None:
    banner = dev_banner("127.0.0.1:50051", URL)
    assert "s3cret" not in banner
    assert "jobs:***@db.example:5433/jobsched" in banner


def test_masked_urls() -> None:
    assert masked(URL) == "postgresql://jobs:***@db.example:5433/jobsched"
    assert masked("postgresql://jobs@h/db") == "postgresql://jobs@h/db"


def test_the_password_file_replaces_the_urls_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-the-file\n")
    args = parse_args(["--database-url", URL, "--database-password-file", str(secret)])
    assert make_url(database_url(args)).password == "from-the-file"


def test_where_names_host_port_database_and_user_never_the_password() -> None:
    assert where(URL) == "db.example:5433/jobsched as jobs"
    assert (
        where("postgresql://postgres@/jobsched?host=/tmp/pg") == "/tmp/pg:5432/jobsched as postgres"
    )
