"""docker-compose.yml, validated offline (there is no container daemon where the tests run).

The file is checked against the compose specification's JSON schema as vendored by the
check-jsonschema package (its builtin schema `vendor.compose-spec`; nothing is vendored here),
and against the package: every jobsched service's command is a real `jobsched` subcommand
whose arguments its own parser accepts, the files it mounts exist, and the start-up order is
the issue's (PostgreSQL healthy -> migrate succeeded -> schedulers healthy -> executors).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobsched.cli import build_parser
from tests.deploy.chart import CONFIG_DIR, REPO
from tests.deploy.dockerfile import stages

COMPOSE = REPO / "docker-compose.yml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def jobsched_services() -> dict[str, dict[str, Any]]:
    """The services that run the jobsched image (built from deploy/Dockerfile)."""
    return {
        name: service
        for name, service in services().items()
        if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
    }


def by_command(command: str) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in jobsched_services().items() if s["command"][0] == command}


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    try:
        import check_jsonschema  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        pytest.fail(
            "check-jsonschema is not installed: `make install` (pip install -e '.[dev]')",
            pytrace=False,
        )
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_compose_file_matches_the_compose_specification() -> None:
    result = check_jsonschema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_wrong_condition(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        COMPOSE.read_text().replace("service_completed_successfully", "service_finished")
    )
    result = check_jsonschema(broken)
    assert result.returncode != 0
    assert "service_finished" in result.stdout


def entrypoint() -> list[str]:
    instruction = stages()[-1].last("ENTRYPOINT")
    assert instruction is not None
    form = instruction.exec_form()
    assert form is not None
    return form


def parse_jobsched(argv: list[str]) -> argparse.Namespace:
    """`jobsched ARGV` as the console script parses it; a bad command fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`jobsched {' '.join(argv)}` is not a jobsched command line", pytrace=False)


def parse_service(args: argparse.Namespace) -> argparse.Namespace:
    """The server command's arguments through the service's own parser (what `jobsched
    scheduler|migrate|executor` hands them to)."""
    from executor.flags import parse_args as executor_args
    from scheduler.flags import parse_args as scheduler_args

    argv = [*args.scheduler_argv, *args.scheduler_args]
    try:
        return executor_args(argv) if args.service == "executor" else scheduler_args(argv)
    except SystemExit:
        pytest.fail(f"`python -m {args.service}` refuses {argv}", pytrace=False)


def test_every_command_is_a_real_jobsched_command() -> None:
    # The image's ENTRYPOINT ends with the console script: a compose command is its arguments.
    assert entrypoint()[-1] == "jobsched"
    assert set(jobsched_services()) == {"migrate", "scheduler-1", "scheduler-2", "executor"}
    for name, service in jobsched_services().items():
        assert "entrypoint" not in service, name
        args = parse_jobsched(service["command"])
        assert args.command == service["command"][0], name
        assert hasattr(args, "scheduler_argv"), f"{name}: not a server command"
        parsed = parse_service(args)
        if args.command == "migrate":
            assert parsed.migrate_only
        if args.command == "scheduler":
            assert parsed.no_migrate, f"{name}: the migrate service migrates, not {name}"


def test_the_scheduler_healthcheck_is_jobsched_health() -> None:
    for name, service in by_command("scheduler").items():
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "jobsched"], name
        args = parse_jobsched(test[2:])
        assert args.command == "health", name
        assert args.address == "127.0.0.1:50051", name


def test_a_bad_command_would_be_caught() -> None:
    """The command check is not vacuous: an unknown subcommand or flag fails it."""
    with pytest.raises(pytest.fail.Exception):
        parse_jobsched(["schedule"])
    with pytest.raises(pytest.fail.Exception):
        parse_service(parse_jobsched(["scheduler", "--no-migrations"]))


def bind_mounts(service: dict[str, Any]) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append((REPO / source, target))
    return mounts


def test_mounted_files_exist() -> None:
    mounted = 0
    for name, service in services().items():
        for source, _ in bind_mounts(service):
            assert source.exists(), f"{name} mounts {source}, which does not exist"
            mounted += 1
    assert mounted >= 6


def test_jobsched_services_read_the_dev_config_they_mount() -> None:
    for name, service in jobsched_services().items():
        ((source, target),) = bind_mounts(service)
        assert source == CONFIG_DIR / "dev.toml", name
        assert service["environment"]["JOBSCHED_CONFIG"] == target, name


def condition(service: dict[str, Any], dependency: str) -> str:
    value: str = service["depends_on"][dependency]["condition"]
    return value


def test_postgres_migrate_schedulers_executors_start_in_order() -> None:
    everything = services()
    postgres = everything["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]

    migrate = everything["migrate"]
    assert migrate["command"] == ["migrate"]
    assert condition(migrate, "postgres") == "service_healthy"
    assert migrate["restart"] == "no"  # one shot

    schedulers = by_command("scheduler")
    assert len(schedulers) == 2
    for name, service in [*schedulers.items(), *by_command("executor").items()]:
        assert condition(service, "migrate") == "service_completed_successfully", name
    for name, service in schedulers.items():
        assert condition(service, "postgres") == "service_healthy", name
        assert "disable" not in service["healthcheck"], name

    (executor,) = by_command("executor").values()
    assert executor["deploy"]["replicas"] == 2
    for name in schedulers:
        assert condition(executor, name) == "service_healthy"
    # The image's HEALTHCHECK asks a local scheduler: off where none runs.
    assert executor["healthcheck"] == {"disable": True}
    assert migrate["healthcheck"] == {"disable": True}


def test_executors_know_every_scheduler_and_no_database() -> None:
    (executor,) = by_command("executor").values()
    addresses = executor["environment"]["JOBSCHED_ADDRESS"].split(",")
    schedulers = by_command("scheduler")
    expected = [
        f"{name}:{service['environment']['JOBSCHED_LISTEN'].rpartition(':')[2]}"
        for name, service in schedulers.items()
    ]
    assert sorted(addresses) == sorted(expected)
    assert "DATABASE_URL" not in executor["environment"]
    for name, service in schedulers.items():
        assert service["environment"]["DATABASE_URL"].startswith("postgresql://"), name
    published = [p for s in schedulers.values() for p in s["ports"]]
    assert len(set(published)) == len(published) == 2


def seconds(duration: str) -> float:
    """A compose duration ("1m30s", "20s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, duration
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def test_executors_stop_after_their_drain() -> None:
    """Compose kills a container 10 s after SIGTERM unless stop_grace_period says otherwise;
    an executor drains for its configured grace first."""
    grace = tomllib.loads((CONFIG_DIR / "dev.toml").read_text())["executor"]["grace"]
    (executor,) = by_command("executor").values()
    assert seconds(executor["stop_grace_period"]) > grace
    assert seconds("1m30s") == 90


def test_observability_is_a_profile_of_its_own() -> None:
    everything = services()
    for name in ("prometheus", "grafana"):
        assert everything[name]["profiles"] == ["observability"], name
    for name, service in everything.items():
        if name not in ("prometheus", "grafana"):
            assert "profiles" not in service, name
