"""Deployed with authentication on: the chart's schedulers run --auth required with the first
admin key and the executors' key from a Secret (one the operator manages, or one the chart
makes with random keys), the executors send theirs, nothing else holds either key, and the
probes need none. auth.mode=off is still possible, and then says --insecure itself."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from scheduler.auth.permissions import is_public
from scheduler.domain.auth import check_key_format
from tests.deploy.chart import ENVIRONMENTS, RELEASE, RenderError, env_of, render

AUTH_SECRET = f"{RELEASE}-auth"
KEY_VARIABLES = {"JOBSCHED_BOOTSTRAP_KEY", "JOBSCHED_BOOTSTRAP_EXECUTOR_KEY", "JOBSCHED_TOKEN"}


def secret_ref(entry: dict[str, Any]) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def secret_name(environment: str) -> str:
    return AUTH_SECRET if environment == "dev" else "jobsched-auth"  # staging/prod: existing


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_schedulers_require_keys_and_take_theirs_from_the_secret(environment: str) -> None:
    env = env_of(render(environment).container("scheduler"))
    assert env["JOBSCHED_AUTH"]["value"] == "required"
    assert "JOBSCHED_INSECURE" not in env
    name = secret_name(environment)
    assert secret_ref(env["JOBSCHED_BOOTSTRAP_KEY"]) == (name, "admin-key")
    assert secret_ref(env["JOBSCHED_BOOTSTRAP_EXECUTOR_KEY"]) == (name, "executor-key")
    assert "value" not in env["JOBSCHED_BOOTSTRAP_KEY"]  # never the key itself


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_executors_send_the_executors_key_and_hold_no_other(environment: str) -> None:
    rendered = render(environment)
    env = env_of(rendered.container("executor"))
    assert secret_ref(env["JOBSCHED_TOKEN"]) == (secret_name(environment), "executor-key")
    assert not {"JOBSCHED_BOOTSTRAP_KEY", "JOBSCHED_BOOTSTRAP_EXECUTOR_KEY"} & set(env)
    # The migrations need no key at all.
    for name, spec in rendered.pod_specs():
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if container["name"] == "migrate" or name.endswith("-migrate"):
                assert not KEY_VARIABLES & set(env_of(container)), name


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_probes_ask_the_health_service_which_needs_no_key(environment: str) -> None:
    container = render(environment).container("scheduler")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" in container[probe], probe  # grpc.health.v1.Health/Check
    assert is_public("/grpc.health.v1.Health/Check")
    assert is_public("/grpc.health.v1.Health/Watch")


def test_without_an_existing_secret_the_chart_makes_one_with_random_keys() -> None:
    rendered = render("dev")
    secret = rendered.one("Secret", AUTH_SECRET)
    annotations = secret["metadata"].get("annotations", {})
    # Not a hook (the migrations do not need it), and kept on uninstall: the database keeps
    # the keys' digests, so a reinstall must find the same keys.
    assert annotations.get("helm.sh/resource-policy") == "keep"
    assert "helm.sh/hook" not in annotations
    keys = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(keys) == {"admin-key", "executor-key"}
    for key in keys.values():
        check_key_format(key)  # what the scheduler accepts (Unauthenticated otherwise)
    assert keys["admin-key"] != keys["executor-key"]
    again = {
        k: base64.b64decode(v).decode()
        for k, v in render("dev", "auth.adminKeyKey=admin-key")
        .one("Secret", AUTH_SECRET)["data"]
        .items()
    }
    assert again["admin-key"] != keys["admin-key"]  # random (helm template: no cluster to keep)


def test_an_existing_secret_and_its_key_names_are_used_as_given() -> None:
    rendered = render(
        "dev",
        "auth.existingSecret=vault-jobsched",
        "auth.adminKeyKey=root",
        "auth.executorKeyKey=fleet",
    )
    assert rendered.maybe("Secret", AUTH_SECRET) is None
    scheduler = env_of(rendered.container("scheduler"))
    assert secret_ref(scheduler["JOBSCHED_BOOTSTRAP_KEY"]) == ("vault-jobsched", "root")
    assert secret_ref(scheduler["JOBSCHED_BOOTSTRAP_EXECUTOR_KEY"]) == ("vault-jobsched", "fleet")
    executor = env_of(rendered.container("executor"))
    assert secret_ref(executor["JOBSCHED_TOKEN"]) == ("vault-jobsched", "fleet")


def test_auth_off_passes_insecure_and_no_keys() -> None:
    rendered = render("dev", "auth.mode=off")
    scheduler = env_of(rendered.container("scheduler"))
    assert scheduler["JOBSCHED_AUTH"]["value"] == "off"
    # Every interface with auth off: the scheduler refuses to start unless told it is guarded.
    assert scheduler["JOBSCHED_INSECURE"]["value"] == "true"
    assert not KEY_VARIABLES & set(scheduler)
    assert "JOBSCHED_TOKEN" not in env_of(rendered.container("executor"))
    assert rendered.maybe("Secret", AUTH_SECRET) is None


@pytest.mark.parametrize("assignment", ["auth.mode=maybe", "auth.adminKeyKey=", "auth.token=x"])
def test_the_schema_refuses_bad_auth_values(assignment: str) -> None:
    with pytest.raises(RenderError):
        render("dev", assignment)
