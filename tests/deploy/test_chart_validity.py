"""The Helm chart lints, renders with every values file, and every rendered object is valid.

Built-in kinds are validated with kubernetes-validate (the OpenAPI schemas of Kubernetes,
strict: unknown fields are errors) against two versions: 1.27, the chart's kubeVersion floor
(native gRPC probes are GA from it), and 1.33, the version we pin as the target. The custom
resources (KEDA's ScaledObject, the Prometheus operator's ServiceMonitor) are not in those
schemas and no schema of theirs is available offline, so their required structure is checked
by hand below (apiVersion, the fields their controllers need, references to our objects).
helm is the real binary (`make helm`); a missing helm fails these tests with how to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy.chart import (
    CHART,
    ENVIRONMENTS,
    NAMESPACE,
    Manifest,
    Rendered,
    RenderError,
    matches,
    render,
    run_helm,
    values_file,
)

KUBERNETES_VERSIONS = ("1.27.0", "1.33.0")

# Every variant the chart's switches produce, so that each template is rendered and validated.
VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dev": ("dev", ()),
    "staging": ("staging", ()),
    "prod": ("prod", ()),
    "prod-init-container": ("prod", ("migrations.mode=initContainer",)),
    "prod-no-migrations": ("prod", ("migrations.mode=none",)),
    "prod-keda": ("prod", ("executor.keda.enabled=true",)),
    "prod-metrics": (
        "prod",
        (
            "metrics.enabled=true",
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
        ),
    ),
    "prod-egress": (
        "prod",
        (
            "networkPolicy.egress.enabled=true",
            "networkPolicy.egress.database[0].ipBlock.cidr=10.20.0.0/16",
        ),
    ),
    "dev-auth-off": ("dev", ("auth.mode=off",)),
    "prod-chart-auth-secret": ("prod", ("auth.existingSecret=",)),
    "staging-chart-secret": (
        "staging",
        ("database.existingSecret=", "database.url=postgresql://jobsched:pw@db:5432/jobsched"),
    ),
}


def render_variant(name: str) -> Rendered:
    environment, sets = VARIANTS[name]
    return render(environment, *sets)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_helm_lint_passes_strictly(environment: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), "--values", str(values_file(environment)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def check_scaled_object(manifest: Manifest, rendered: Rendered) -> None:
    """KEDA's ScaledObject (keda.sh/v1alpha1): it must name our executor Deployment, bound the
    replicas, and list triggers each with a type and string-valued metadata (KEDA's admission
    webhook refuses numbers there)."""
    assert manifest["apiVersion"] == "keda.sh/v1alpha1"
    spec = manifest["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] == rendered.deployment("executor")["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["pollingInterval"] > 0
    assert spec["cooldownPeriod"] >= 0
    assert spec["triggers"], "a ScaledObject needs at least one trigger"
    for trigger in spec["triggers"]:
        assert isinstance(trigger["type"], str)
        assert trigger["type"]
        metadata = trigger["metadata"]
        assert metadata, trigger
        assert all(isinstance(v, str) for v in metadata.values()), metadata
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert set(behavior) <= {"scaleUp", "scaleDown"}


def check_service_monitor(manifest: Manifest, rendered: Rendered) -> None:
    """The Prometheus operator's ServiceMonitor (monitoring.coreos.com/v1): its selector must
    pick exactly one of our Services, which has the named endpoint port."""
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    spec = manifest["spec"]
    selector = spec["selector"]["matchLabels"]
    selected = [s for s in rendered.all("Service") if matches(selector, s["metadata"]["labels"])]
    assert len(selected) == 1, [s["metadata"]["name"] for s in selected]
    port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
    assert spec["endpoints"], "a ServiceMonitor needs at least one endpoint"
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"].startswith("/")
    assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE]


def check_pod_monitor(manifest: Manifest, rendered: Rendered) -> None:
    """The Prometheus operator's PodMonitor: its selector picks the pods of exactly one of our
    Deployments, whose container has the named endpoint port."""
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    spec = manifest["spec"]
    selector = spec["selector"]["matchLabels"]
    selected = [
        d
        for d in rendered.all("Deployment")
        if matches(selector, d["spec"]["template"]["metadata"]["labels"])
    ]
    assert len(selected) == 1, [d["metadata"]["name"] for d in selected]
    containers = selected[0]["spec"]["template"]["spec"]["containers"]
    port_names = {p["name"] for c in containers for p in c.get("ports", [])}
    assert spec["podMetricsEndpoints"], "a PodMonitor needs at least one endpoint"
    for endpoint in spec["podMetricsEndpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"].startswith("/")
    assert spec["namespaceSelector"]["matchNames"] == [NAMESPACE]


def check_prometheus_rule(manifest: Manifest, rendered: Rendered) -> None:
    """The Prometheus operator's PrometheusRule: named groups of rules, each an alert with an
    expression and a `for` (promtool checks the expressions: tests/deploy/test_observability)."""
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    groups = manifest["spec"]["groups"]
    assert groups
    for group in groups:
        assert group["name"]
        assert group["rules"]
        for rule in group["rules"]:
            for field in ("alert", "expr", "for"):
                assert rule[field], rule


CUSTOM_RESOURCES: dict[str, Callable[[Manifest, Rendered], None]] = {
    "ScaledObject": check_scaled_object,
    "ServiceMonitor": check_service_monitor,
    "PodMonitor": check_pod_monitor,
    "PrometheusRule": check_prometheus_rule,
}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_is_valid(variant: str, version: str) -> None:
    rendered = render_variant(variant)
    assert len(rendered.manifests) >= 8, rendered.kinds()
    for manifest in rendered:
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        if kind in CUSTOM_RESOURCES:
            CUSTOM_RESOURCES[kind](manifest, rendered)
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            message = f"{kind}/{name} is not valid Kubernetes {version}: {path}: {err.message}"
            pytest.fail(message, pytrace=False)
        except kubernetes_validate.SchemaNotFoundError as err:
            message = f"{kind}/{name}: {err.message} (a custom resource needs a check here)"
            pytest.fail(message, pytrace=False)


def test_the_custom_resource_checks_catch_a_broken_object() -> None:
    """The hand-written checks are not vacuous: a ScaledObject aimed at another Deployment, or
    with a numeric threshold, and a ServiceMonitor selecting nothing, fail them."""
    rendered = render_variant("prod-keda")
    (scaled,) = rendered.all("ScaledObject")
    wrong_target = {**scaled, "spec": {**scaled["spec"], "scaleTargetRef": {"name": "other"}}}
    with pytest.raises(AssertionError):
        check_scaled_object(wrong_target, rendered)
    numeric = {
        **scaled,
        "spec": {**scaled["spec"], "triggers": [{"type": "prometheus", "metadata": {"x": 50}}]},
    }
    with pytest.raises(AssertionError):
        check_scaled_object(numeric, rendered)

    rendered = render_variant("prod-metrics")
    (monitor,) = rendered.all("ServiceMonitor")
    nothing = {**monitor, "spec": {**monitor["spec"], "selector": {"matchLabels": {"a": "b"}}}}
    with pytest.raises(AssertionError):
        check_service_monitor(nothing, rendered)
    (pods,) = rendered.all("PodMonitor")
    nothing = {**pods, "spec": {**pods["spec"], "selector": {"matchLabels": {"a": "b"}}}}
    with pytest.raises(AssertionError):
        check_pod_monitor(nothing, rendered)
    (rule,) = rendered.all("PrometheusRule")
    empty = {**rule, "spec": {"groups": [{"name": "jobsched", "rules": []}]}}
    with pytest.raises(AssertionError):
        check_prometheus_rule(empty, rendered)


def test_kubernetes_validate_refuses_an_unknown_field() -> None:
    """Strict validation is on: a misspelt field in a rendered Deployment is an error."""
    deployment = render("prod").deployment("scheduler")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("migrations.mode=sometimes", "value must be one of 'hook', 'initContainer', 'none'"),
        ("scheduler.replicaz=3", "additional properties 'replicaz' not allowed"),
        ("scheduler.antiAffinity=maybe", "value must be one of 'soft', 'hard', 'none'"),
        ("config.file=../../etc/passwd", "/config/file"),
    ],
)
def test_values_schema_refuses_bad_values(assignment: str, message: str) -> None:
    with pytest.raises(RenderError, match=message.replace("(", r"\(").replace(")", r"\)")):
        render("prod", assignment)


def test_a_config_file_that_is_not_in_the_chart_is_refused() -> None:
    with pytest.raises(RenderError, match=r'config.file "qa.toml" is not in the chart'):
        render("prod", "config.file=qa.toml")


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[executor\ngrace = 30\n")
    with pytest.raises(RenderError, match="not valid TOML"):
        render("prod", set_files={"config.inline": bad})


def test_a_database_is_required() -> None:
    with pytest.raises(RenderError, match=r"set database.existingSecret .* or database.url"):
        render(None)


def test_the_chart_reads_the_example_configs_through_its_config_link() -> None:
    """deploy/helm/jobsched/config is a link to deploy/config: one copy of each example file."""
    link = CHART / "config"
    assert link.is_symlink()
    assert link.resolve() == (CHART.parents[1] / "config").resolve()
