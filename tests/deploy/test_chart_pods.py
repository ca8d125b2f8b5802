"""What every pod of the chart shares: the restricted security context, resources, the
configuration file, the database URL from a Secret, and the migrations as the values choose."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.chart import CONFIG_DIR, ENVIRONMENTS, RELEASE, Rendered, env_of, render
from tests.deploy.dockerfile import final_user_ids

SECRET = f"{RELEASE}-database"
CHART_SECRET = ("database.existingSecret=", "database.url=postgresql://u:pw@db:5432/jobsched")
MIGRATION_MODES = {
    "hook": ("migrations.mode=hook",),
    "initContainer": ("migrations.mode=initContainer",),
    "none": ("migrations.mode=none",),
}
HOOKS = "pre-install,pre-upgrade"


def containers(rendered: Rendered) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, pod spec, container) of every container, init containers included."""
    for name, spec in rendered.pod_specs():
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield name, spec, container


def each_variant() -> list[Rendered]:
    variants = [render(environment) for environment in ENVIRONMENTS]
    return variants + [render("prod", *sets) for sets in MIGRATION_MODES.values()]


def test_every_container_runs_restricted_as_the_images_user() -> None:
    uid, gid = final_user_ids()
    seen = set()
    for rendered in each_variant():
        for name, spec, container in containers(rendered):
            seen.add(container["name"])
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True, name
            assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid), name
            assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec["automountServiceAccountToken"] is False, name
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert "privileged" not in context, name
            # The root filesystem is read-only: /tmp is an emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name
    assert seen == {"scheduler", "executor", "migrate"}


def test_every_container_has_requests_and_limits() -> None:
    for rendered in each_variant():
        for name, _, container in containers(rendered):
            resources = container["resources"]
            for part in ("requests", "limits"):
                assert set(resources[part]) >= {"cpu", "memory"}, (name, container["name"], part)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_configmap_is_the_environments_config_file(environment: str) -> None:
    rendered = render(environment)
    text = rendered.config_text()
    expected = (CONFIG_DIR / f"{environment}.toml").read_text()
    assert text.rstrip("\n") == expected.rstrip("\n")  # comments included: it is the doc
    assert tomllib.loads(text) == tomllib.loads(expected)
    for role in ("scheduler", "executor"):
        spec = rendered.pod_spec(role)
        container = rendered.container(role)
        path = env_of(container)["JOBSCHED_CONFIG"]["value"]
        directory, _, key = path.rpartition("/")
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volume = {v["name"]: v for v in spec["volumes"]}[mounts[directory]]
        assert volume["configMap"]["name"] == f"{RELEASE}-config"
        assert key == "jobsched.toml"


def test_a_config_change_rolls_the_pods(tmp_path: Path) -> None:
    config = tmp_path / "jobsched.toml"
    config.write_text((CONFIG_DIR / "prod.toml").read_text() + "\n# changed\n")
    before = render("prod")
    after = render("prod", set_files={"config.inline": config})
    for role in ("scheduler", "executor"):
        annotation = "checksum/config"
        old = before.deployment(role)["spec"]["template"]["metadata"]["annotations"][annotation]
        new = after.deployment(role)["spec"]["template"]["metadata"]["annotations"][annotation]
        assert old != new, role


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_staging_and_prod_take_the_database_url_from_an_existing_secret(
    environment: str,
) -> None:
    rendered = render(environment)
    assert rendered.all("Secret") == []  # nothing secret in the values
    for name, _, container in containers(rendered):
        env = env_of(container)
        if container["name"] == "executor":
            continue
        reference = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert reference == {"name": "jobsched-database", "key": "DATABASE_URL"}, name


def test_no_container_gets_the_database_url_as_plain_text() -> None:
    for rendered in [*each_variant(), render("staging", *CHART_SECRET)]:
        for name, _, container in containers(rendered):
            for entry in container.get("env", []):
                if entry["name"] == "DATABASE_URL":
                    assert "value" not in entry, name
                    assert entry["valueFrom"]["secretKeyRef"]["name"] == SECRET, name


def hooks(manifest: dict[str, Any]) -> dict[str, str]:
    annotations: dict[str, str] = manifest["metadata"].get("annotations", {})
    return {k: v for k, v in annotations.items() if k.startswith("helm.sh/hook")}


def test_migrations_as_a_hook_job() -> None:
    rendered = render("staging", *CHART_SECRET, *MIGRATION_MODES["hook"])
    job = rendered.one("Job", f"{RELEASE}-migrate")
    assert hooks(job)["helm.sh/hook"] == HOOKS
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["args"] == ["migrate"]
    assert env_of(container)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == SECRET
    assert "initContainers" not in rendered.pod_spec("scheduler")
    # The Job runs before the release's resources exist: the chart's Secret is a hook created
    # before it.
    secret = rendered.one("Secret", SECRET)
    assert hooks(secret)["helm.sh/hook"] == HOOKS
    assert int(hooks(secret)["helm.sh/hook-weight"]) < int(hooks(job)["helm.sh/hook-weight"])
    assert "hook-succeeded" not in hooks(secret)["helm.sh/hook-delete-policy"]


def test_migrations_as_an_init_container() -> None:
    rendered = render("staging", *CHART_SECRET, *MIGRATION_MODES["initContainer"])
    assert rendered.all("Job") == []
    (init,) = rendered.pod_spec("scheduler")["initContainers"]
    assert init["args"] == ["migrate"]
    assert init["image"] == rendered.container("scheduler")["image"]
    assert env_of(init)["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == SECRET
    assert "initContainers" not in rendered.pod_spec("executor")
    # An ordinary Secret: no hook needs it early.
    assert hooks(rendered.one("Secret", SECRET)) == {}


def test_migrations_left_to_the_operator() -> None:
    rendered = render("prod", *MIGRATION_MODES["none"])
    assert rendered.all("Job") == []
    assert "initContainers" not in rendered.pod_spec("scheduler")
    assert rendered.container("scheduler")["args"][:2] == ["scheduler", "--no-migrate"]


@pytest.mark.parametrize(("environment", "mode"), [("dev", "initContainer"), ("prod", "hook")])
def test_each_environment_migrates_as_documented(environment: str, mode: str) -> None:
    rendered = render(environment)
    has_job = bool(rendered.all("Job"))
    has_init = "initContainers" in rendered.pod_spec("scheduler")
    assert (has_job, has_init) == (mode == "hook", mode == "initContainer")
