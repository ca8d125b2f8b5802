"""`python -m scheduler` at start: a database it can never use (no such role, no such
database) is one clear line and a non-zero exit, not a scheduler serving with every statement
failing; passwords are never printed (masked URLs, or a password file instead of the URL).

The local test server trusts 127.0.0.1 (pg_hba `trust`), so a wrong password is played by a
small server speaking PostgreSQL's startup protocol that refuses the password (28P01); a role
and a database that do not exist are asked of the real server."""

from __future__ import annotations

import socket
import socketserver
import struct
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

PASSWORD = "s3cret-Pw"


def run_scheduler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        capture_output=True,
        text=True,
        timeout=50,
        env={"PATH": "/usr/bin:/bin"},
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert "Traceback" not in result.stderr + result.stdout
    for text in expected:
        assert text in line, line
    assert PASSWORD not in result.stderr + result.stdout
    return line


def test_a_role_that_does_not_exist_is_one_line_and_exit_2(database_url: str) -> None:
    url = make_url(database_url).set(username="no_such_role", password=PASSWORD)
    result = run_scheduler(
        "--database-url", url.render_as_string(hide_password=False), "--no-migrate"
    )
    # A TCP server names its host; the embedded one its socket directory (`?host=/dir`).
    host = f"{url.host or url.query['host']}:{url.port or 5432}/{url.database}"
    assert_one_clear_line(
        result, f"cannot connect to PostgreSQL at {host} as no_such_role", "does not exist"
    )


def test_a_database_that_does_not_exist_is_one_line_and_exit_2(database_url: str) -> None:
    url = make_url(database_url).set(database="no_such_database_here")
    result = run_scheduler("--database-url", url.render_as_string(hide_password=False))
    assert_one_clear_line(result, "cannot connect to PostgreSQL at", "no_such_database_here")


def test_migrate_only_masks_the_password(database_url: str) -> None:
    url = make_url(database_url).set(password=PASSWORD).render_as_string(hide_password=False)
    result = run_scheduler("--database-url", url, "--migrate-only")
    assert result.returncode == 0, result.stderr
    assert "is at the latest migration" in result.stdout
    assert "***" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_a_password_file_replaces_the_urls_password(database_url: str, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    result = run_scheduler(
        "--database-url", database_url, "--database-password-file", str(secret), "--migrate-only"
    )
    assert result.returncode == 0, result.stderr
    assert "***" in result.stdout  # the URL now has a password, shown masked
    assert PASSWORD not in result.stdout + result.stderr


def test_a_missing_password_file_is_one_line(database_url: str, tmp_path: Path) -> None:
    result = run_scheduler(
        "--database-url",
        database_url,
        "--database-password-file",
        str(tmp_path / "absent"),
        "--migrate-only",
    )
    assert_one_clear_line(result, "cannot read the database password file")


class _RefusingPassword(socketserver.BaseRequestHandler):
    """Plays a PostgreSQL server that asks for a password and refuses it (SQLSTATE 28P01), as a
    server with password authentication does; the local server's `trust` cannot."""

    def handle(self) -> None:
        sock = self.request
        while True:
            (length,) = struct.unpack("!i", _read(sock, 4))
            body = _read(sock, length - 4)
            if struct.unpack("!i", body[:4])[0] == 80877103:  # SSLRequest: not here
                sock.sendall(b"N")
                continue
            break  # the startup message
        sock.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind = _read(sock, 1)
        (length,) = struct.unpack("!i", _read(sock, 4))
        _read(sock, length - 4)
        assert kind == b"p"
        fields = b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "jobsched"\0\0'
        sock.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


def test_a_wrong_password_is_one_line_and_exit_2() -> None:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _RefusingPassword) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        try:
            result = run_scheduler(
                "--database-url", f"postgresql://jobsched:{PASSWORD}@127.0.0.1:{port}/jobsched"
            )
        finally:
            server.shutdown()
    line = assert_one_clear_line(result, f"127.0.0.1:{port}/jobsched as jobsched")
    assert line.endswith("password authentication failed"), line
