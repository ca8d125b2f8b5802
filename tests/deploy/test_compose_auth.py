"""docker-compose.yml with authentication on: the schedulers require keys, taking the first
admin key and the executors' key from a published development env file (loudly marked), the
executors send that executors' key and hold no other, and the schedulers' environment is one
they start with (checked through the scheduler's own command line)."""

from __future__ import annotations

import pytest

from scheduler.domain.auth import check_key_format
from scheduler.flags import PROGRAM, exposure_problem, settings_from
from tests.deploy.chart import REPO
from tests.deploy.test_compose import by_command

LOUD = "PUBLISHED IN THIS REPOSITORY"


def env_file(path: str) -> dict[str, str]:
    text = (REPO / path).read_text()
    assert LOUD in text, f"{path} must say loudly that its keys are public"
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def test_schedulers_require_keys_from_the_published_dev_file() -> None:
    schedulers = by_command("scheduler")
    assert len(schedulers) == 2
    for name, service in schedulers.items():
        environment = service["environment"]
        assert environment["JOBSCHED_AUTH"] == "required", name
        assert "JOBSCHED_INSECURE" not in environment, name
        assert service["env_file"] == "deploy/dev-keys/scheduler.env", name
    keys = env_file("deploy/dev-keys/scheduler.env")
    assert set(keys) == {"JOBSCHED_BOOTSTRAP_KEY", "JOBSCHED_BOOTSTRAP_EXECUTOR_KEY"}
    for key in keys.values():
        check_key_format(key)
    assert keys["JOBSCHED_BOOTSTRAP_KEY"] != keys["JOBSCHED_BOOTSTRAP_EXECUTOR_KEY"]


def test_executors_send_the_executors_key_and_hold_no_other() -> None:
    (executor,) = by_command("executor").values()
    assert executor["env_file"] == "deploy/dev-keys/executor.env"
    assert env_file("deploy/dev-keys/executor.env") == {
        "JOBSCHED_TOKEN": env_file("deploy/dev-keys/scheduler.env")[
            "JOBSCHED_BOOTSTRAP_EXECUTOR_KEY"
        ]
    }
    assert "env_file" not in by_command("migrate")["migrate"]  # migrations need no key


def test_the_schedulers_environment_is_one_they_start_with() -> None:
    """Resolved as the scheduler resolves it (flags, environment, the mounted dev.toml): auth
    required on every interface, so the loopback-only refusal does not apply."""
    service = by_command("scheduler")["scheduler-1"]
    environ = {
        **{k: str(v) for k, v in service["environment"].items()},
        **env_file("deploy/dev-keys/scheduler.env"),
        "JOBSCHED_CONFIG": str(REPO / "deploy" / "config" / "dev.toml"),
    }
    args = PROGRAM.resolve(service["command"][1:], environ=environ).args
    with pytest.MonkeyPatch.context() as patch:  # the bootstrap keys are read from os.environ
        for name, value in env_file("deploy/dev-keys/scheduler.env").items():
            patch.setenv(name, value)
        settings = settings_from(args)
    assert settings.auth == "required"
    assert settings.listen == "0.0.0.0:50051"
    assert exposure_problem(settings, args.insecure) is None
    assert settings.bootstrap_key is not None
    assert settings.bootstrap_executor_key is not None
