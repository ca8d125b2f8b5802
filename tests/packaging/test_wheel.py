"""The wheel, as a user gets it: built from the files the Dockerfile copies, installed
non-editable into fresh virtual environments outside the checkout, run from another directory.

- `jobsched[server]`: `jobsched migrate` on a new database, a scheduler and an executor from the
  installed copy, a job to SUCCEEDED through the installed CLI.
- the base install (a client, an executor): no SQLAlchemy, asyncpg or alembic; the client and
  the executor never import the scheduler; a server command says which extra to install.

Dependencies come from the package index through pip (its cache makes repeated runs quick)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.faults.harness import free_port

REPO = Path(__file__).resolve().parents[2]
# What deploy/Dockerfile copies into its build stage.
SOURCES = (
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "services",
    "scheduler",
    "executor",
    "dashboard",
)
SERVER_ONLY = ("sqlalchemy", "asyncpg", "alembic")

pytestmark = pytest.mark.timeout(600)


def run(*argv: str | Path, cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{argv}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def clean_env() -> dict[str, str]:
    """The environment without what points at the checkout (PYTHONPATH, a venv, a config)."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "JOBSCHED_CONFIG", "DATABASE_URL", "PYTHONHOME"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built (as the Dockerfile does) from a copy of just the files it copies."""
    context = tmp_path_factory.mktemp("context")
    for name in SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source,
                context / name,
                ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc", "node_modules", ".next", "out"
                ),
            )
        else:
            shutil.copy2(source, context / name)
    dist = tmp_path_factory.mktemp("dist")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--wheel-dir",
        dist,
        ".",
        cwd=context,
        env=clean_env(),
    )
    [built] = list(dist.glob("jobsched-*.whl"))
    return built


def venv(root: Path, requirement: str) -> Path:
    """A fresh virtual environment with `requirement` installed; its bin directory."""
    run(sys.executable, "-m", "venv", root, cwd=root.parent, env=clean_env())
    bin_dir = root / "bin"
    run(bin_dir / "pip", "install", "-q", requirement, cwd=root.parent, env=clean_env())
    return bin_dir


@pytest.fixture(scope="module")
def server_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return venv(tmp_path_factory.mktemp("server") / "venv", f"{wheel}[server]")


@pytest.fixture(scope="module")
def client_bin(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return venv(tmp_path_factory.mktemp("client") / "venv", str(wheel))


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with nothing of the checkout in it."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    return directory


@pytest.fixture
def processes() -> Iterator[list[tuple[subprocess.Popen[str], IO[str]]]]:
    """(process, its log file) pairs, stopped (SIGTERM, then SIGKILL) and closed at the end."""
    pairs: list[tuple[subprocess.Popen[str], IO[str]]] = []
    yield pairs
    started = [process for process, _ in pairs]
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for _, log in pairs:
        log.close()


def wait_serving(bin_dir: Path, address: str, cwd: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while True:
        result = subprocess.run(
            [bin_dir / "jobsched", "--address", address, "--timeout", "2", "health"],
            cwd=cwd,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, f"the scheduler never served: {result.stderr}"
        time.sleep(0.2)


def test_the_server_install_migrates_serves_and_runs_a_job(
    server_bin: Path,
    empty_database_url: str,
    elsewhere: Path,
    processes: list[tuple[subprocess.Popen[str], IO[str]]],
) -> None:
    env = clean_env()
    out = run(
        server_bin / "jobsched",
        "migrate",
        "--database-url",
        empty_database_url,
        cwd=elsewhere,
        env=env,
    )
    assert "at the latest migration" in out

    address = f"127.0.0.1:{free_port()}"
    logs = elsewhere / "logs"
    logs.mkdir()
    for name, argv in (
        (
            "scheduler",
            [
                "scheduler",
                "--no-migrate",
                "--database-url",
                empty_database_url,
                "--listen",
                address,
            ],
        ),
        ("executor", ["executor", "--scheduler", address, "--capacity", "2"]),
    ):
        handle = (logs / f"{name}.log").open("w")
        process = subprocess.Popen(
            [str(server_bin / "jobsched"), *argv],
            cwd=elsewhere,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append((process, handle))
    wait_serving(server_bin, address, elsewhere)
    result = subprocess.run(
        [
            server_bin / "jobsched",
            "--address",
            address,
            "submit",
            "--type",
            "sleep",
            "--payload",
            '{"seconds": 0.2}',
            "--watch",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log_text = "".join(p.read_text() for p in logs.iterdir())
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{log_text}"
    assert "succeeded" in result.stdout


def test_the_base_install_is_a_client_and_an_executor_without_the_server(
    client_bin: Path, server_bin: Path, elsewhere: Path
) -> None:
    env = clean_env()
    python = client_bin / "python"
    for module in SERVER_ONLY:
        missing = subprocess.run(
            [python, "-c", f"import {module}"], cwd=elsewhere, env=env, capture_output=True
        )
        assert missing.returncode != 0, f"{module} is installed without the server extra"
    # Client, CLI and executor load without anything of the scheduler.
    loaded = run(
        python,
        "-c",
        "import sys, jobsched.client, jobsched.cli, executor.__main__, executor.runner; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'scheduler', 'sqlalchemy'}))",
        cwd=elsewhere,
        env=env,
    )
    assert loaded.strip() == "[]"
    assert "usage: python -m executor" in run(
        client_bin / "jobsched", "executor", "--help", cwd=elsewhere, env=env
    )
    for command in ("scheduler", "migrate", "dev", "keys bootstrap"):
        refused = subprocess.run(
            [client_bin / "jobsched", *command.split()],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1
        assert refused.stdout == ""
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith(f"jobsched: jobsched {command} needs the server extra")
        assert line.endswith("pip install 'jobsched[server]'")
    # config show reads the executor's and the client's tables, and names what the scheduler's
    # needs instead of failing on it.
    shown = run(client_bin / "jobsched", "config", "show", cwd=elsewhere, env=env)
    assert "[executor]" in shown
    assert "capacity = 10" in shown
    assert "[client]" in shown
    assert "[scheduler]\n# needs the server extra" in shown

    def size(bin_dir: Path) -> int:
        return sum(f.stat().st_size for f in bin_dir.parent.rglob("*") if f.is_file())

    assert size(client_bin) < size(server_bin) * 0.7  # the point of the extra


def test_the_wheel_carries_its_migrations_types_and_license(wheel: Path) -> None:
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "scheduler/migrations/alembic.ini",
        "scheduler/migrations/env.py",
        "scheduler/migrations/script.py.mako",
        "scheduler/migrations/versions/0001_jobs_and_job_events.py",
        "scheduler/maintenance/retention.py",
        "scheduler/py.typed",
        "jobsched/py.typed",
        "executor/py.typed",
        "jobsched/v1/job_pb2.pyi",
    ):
        assert needed in names, needed
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    versions = {p.name for p in (REPO / "scheduler/migrations/versions").glob("*.py")}
    assert {n.rsplit("/", 1)[1] for n in names if "/migrations/versions/" in n} == versions
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]


def test_the_wheel_carries_the_dashboard_and_its_front_end(
    wheel: Path, client_bin: Path, elsewhere: Path
) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "dashboard/app.py" in names
    assert "dashboard/static/index.html" in names, (
        "the wheel has no dashboard front end: `make dashboard` builds it into dashboard/static "
        "(make test does it first)"
    )
    assert "dashboard/static/jobs/detail/index.html" in names
    assert any(n.startswith("dashboard/static/_next/static/") and n.endswith(".js") for n in names)
    assert not [n for n in names if "node_modules" in n or n.startswith("dashboard/web/")]
    # Without the dashboard extra, the command says which one to install.
    refused = subprocess.run(
        [client_bin / "jobsched", "dashboard"],
        cwd=elsewhere,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("jobsched: jobsched dashboard needs the dashboard extra")
    assert line.endswith("pip install 'jobsched[dashboard]'")
