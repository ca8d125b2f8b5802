"""The chart's executors: a termination grace longer than their drain, autoscaling by HPA or
KEDA (never both), unique names, and no database credentials."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.deploy.chart import ENVIRONMENTS, RELEASE, RenderError, env_of, render

EXECUTOR = f"{RELEASE}-executor"


def configured_grace(environment: str) -> float:
    grace: float = tomllib.loads(render(environment).config_text())["executor"]["grace"]
    return grace


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_termination_grace_exceeds_the_executors_configured_grace(environment: str) -> None:
    rendered = render(environment)
    grace = configured_grace(environment)
    executor = rendered.pod_spec("executor")["terminationGracePeriodSeconds"]
    scheduler = rendered.pod_spec("scheduler")["terminationGracePeriodSeconds"]
    assert executor > grace
    # Schedulers outlast the executors' drain (their hand-backs need a scheduler).
    assert scheduler > grace
    assert scheduler >= executor


def test_termination_grace_follows_the_configuration_file(tmp_path: Path) -> None:
    """The chart reads the grace from the file it mounts: a longer grace, a longer period."""
    config = tmp_path / "jobsched.toml"
    config.write_text("[executor]\ngrace = 119.5\ncapacity = 2\n")
    rendered = render("prod", set_files={"config.inline": config})
    assert rendered.config_text().strip() == config.read_text().strip()
    assert rendered.pod_spec("executor")["terminationGracePeriodSeconds"] == 120 + 15
    assert rendered.pod_spec("scheduler")["terminationGracePeriodSeconds"] > 120


def test_a_termination_grace_within_the_executors_grace_is_refused() -> None:
    assert configured_grace("prod") == 30
    with pytest.raises(RenderError, match=r"must exceed the executor's grace \(30 s"):
        render("prod", "executor.terminationGracePeriodSeconds=30")
    period = render("prod", "executor.terminationGracePeriodSeconds=31").pod_spec("executor")
    assert period["terminationGracePeriodSeconds"] == 31


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_executors_scale_with_an_hpa(environment: str) -> None:
    rendered = render(environment)
    hpa = rendered.one("HorizontalPodAutoscaler", EXECUTOR)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", EXECUTOR)
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The autoscaler owns the replica count: a helm upgrade must not reset it.
    assert "replicas" not in rendered.deployment("executor")["spec"]
    assert rendered.all("ScaledObject") == []


def test_keda_replaces_the_hpa_when_enabled() -> None:
    rendered = render("prod", "executor.keda.enabled=true")
    (scaled,) = rendered.all("ScaledObject")
    assert scaled["spec"]["scaleTargetRef"]["name"] == EXECUTOR
    # KEDA creates its own HPA; a second one would fight it.
    assert rendered.all("HorizontalPodAutoscaler") == []
    assert "replicas" not in rendered.deployment("executor")["spec"]


def test_the_keda_trigger_is_configurable(tmp_path: Path) -> None:
    values = tmp_path / "keda.yaml"
    values.write_text(
        "executor:\n  keda:\n    enabled: true\n    triggers:\n"
        "      - type: postgresql\n        metadata:\n"
        "          query: SELECT count(*) FROM jobs WHERE state = 'queued'\n"
        '          targetQueryValue: "100"\n'
    )
    (scaled,) = render("prod", more_values=(values,)).all("ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    assert trigger["metadata"]["targetQueryValue"] == "100"


def test_dev_runs_one_executor_without_autoscaling() -> None:
    rendered = render("dev")
    assert rendered.deployment("executor")["spec"]["replicas"] == 1
    assert rendered.all("HorizontalPodAutoscaler") == []
    assert rendered.all("ScaledObject") == []


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_executors_are_named_after_their_pod_and_hold_no_database_url(environment: str) -> None:
    container = render(environment).container("executor")
    args = container["args"]
    assert args[0] == "executor"
    assert args[args.index("--name") + 1] == "$(POD_NAME)"
    env = env_of(container)
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "DATABASE_URL" not in env
