"""The chart's NetworkPolicies (schedulers reachable on gRPC by the release and its clients,
executors and migrations by no one) and the metrics port behind metrics.enabled."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.chart import ENVIRONMENTS, RELEASE, Rendered, matches, render

EGRESS = (
    "networkPolicy.egress.enabled=true",
    "networkPolicy.egress.database[0].ipBlock.cidr=10.20.0.0/16",
)
METRICS = ("metrics.enabled=true", "metrics.serviceMonitor.enabled=true")


def policy_for(rendered: Rendered, labels: dict[str, str]) -> dict[str, Any]:
    """The one NetworkPolicy whose podSelector selects pods with these labels."""
    selecting = []
    for policy in rendered.all("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        expressions_hold = all(
            labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
        )
        if matches(selector.get("matchLabels", {}), labels) and expressions_hold:
            selecting.append(policy)
    assert len(selecting) == 1, [p["metadata"]["name"] for p in selecting]
    return selecting[0]


def template_labels(rendered: Rendered, kind: str, name: str) -> dict[str, str]:
    labels: dict[str, str] = rendered.one(kind, name)["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_schedulers_accept_grpc_from_the_release_and_labelled_clients(environment: str) -> None:
    rendered = render(environment)
    policy = policy_for(rendered, template_labels(rendered, "Deployment", f"{RELEASE}-scheduler"))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    executor_labels = template_labels(rendered, "Deployment", f"{RELEASE}-executor")
    peers = rule["from"]
    assert any(
        matches(p.get("podSelector", {}).get("matchLabels", {}), executor_labels) for p in peers
    )
    assert {"jobsched.dev/client": "true"} in [p["podSelector"]["matchLabels"] for p in peers]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_executors_and_migrations_accept_no_connections(environment: str) -> None:
    rendered = render(environment, "migrations.mode=hook")
    for kind, name in (("Deployment", f"{RELEASE}-executor"), ("Job", f"{RELEASE}-migrate")):
        policy = policy_for(rendered, template_labels(rendered, kind, name))
        assert "Ingress" in policy["spec"]["policyTypes"]
        assert policy["spec"]["ingress"] == [], name


def test_egress_when_enabled_allows_dns_the_schedulers_and_the_database() -> None:
    rendered = render("prod", *EGRESS)
    scheduler = policy_for(
        rendered, template_labels(rendered, "Deployment", f"{RELEASE}-scheduler")
    )
    executor = policy_for(rendered, template_labels(rendered, "Deployment", f"{RELEASE}-executor"))
    migrate = policy_for(rendered, template_labels(rendered, "Job", f"{RELEASE}-migrate"))
    for policy in (scheduler, executor, migrate):
        assert "Egress" in policy["spec"]["policyTypes"]
        ports = [p for rule in policy["spec"]["egress"] for p in rule["ports"]]
        assert {"port": 53, "protocol": "UDP"} in ports
    for policy in (scheduler, migrate):
        (database,) = [r for r in policy["spec"]["egress"] if r["ports"][0]["port"] == 5432]
        assert database["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    (to_schedulers,) = [r for r in executor["spec"]["egress"] if r["ports"][0]["port"] == 50051]
    scheduler_labels = template_labels(rendered, "Deployment", f"{RELEASE}-scheduler")
    assert matches(to_schedulers["to"][0]["podSelector"]["matchLabels"], scheduler_labels)
    # Executors never reach the database.
    assert not [r for r in executor["spec"]["egress"] if r["ports"][0]["port"] == 5432]


def test_egress_is_not_restricted_by_default() -> None:
    for policy in render("prod").all("NetworkPolicy"):
        assert "Egress" not in policy["spec"]["policyTypes"]


def test_metrics_are_off_until_the_schedulers_serve_them() -> None:
    rendered = render("prod")
    assert rendered.all("ServiceMonitor") == []
    assert [p["name"] for p in rendered.container("scheduler")["ports"]] == ["grpc"]


def test_metrics_enabled_adds_the_port_its_policy_and_a_servicemonitor() -> None:
    rendered = render("prod", *METRICS)
    (monitor,) = rendered.all("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    ports = {p["name"]: p["containerPort"] for p in rendered.container("scheduler")["ports"]}
    service = rendered.one("Service", f"{RELEASE}-scheduler")
    (metrics,) = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
    assert metrics["targetPort"] == "metrics"
    assert "metrics" in ports
    policy = policy_for(rendered, template_labels(rendered, "Deployment", f"{RELEASE}-scheduler"))
    assert [r["ports"][0]["port"] for r in policy["spec"]["ingress"]] == ["grpc", "metrics"]
    # A ServiceMonitor needs metrics: without them it is not rendered.
    assert render("prod", "metrics.serviceMonitor.enabled=true").all("ServiceMonitor") == []
