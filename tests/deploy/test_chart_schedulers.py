"""The chart's schedulers: replicas that survive a node and a rollout, native gRPC probes on
the port they serve, and the Services for connection- and client-side balancing."""

from __future__ import annotations

import pytest

from tests.deploy.chart import ENVIRONMENTS, NAMESPACE, RELEASE, env_of, matches, render

SCHEDULER = f"{RELEASE}-scheduler"
HEADLESS = f"{RELEASE}-scheduler-headless"


def pod_labels(environment: str, role: str) -> dict[str, str]:
    labels: dict[str, str] = render(environment).deployment(role)["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_schedulers_are_replicated_and_kept_through_disruptions(environment: str) -> None:
    rendered = render(environment)
    deployment = rendered.deployment("scheduler")
    replicas = deployment["spec"]["replicas"]
    assert replicas >= 2
    # A rollout adds a replica before it removes one.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    pdb = rendered.one("PodDisruptionBudget", SCHEDULER)
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels(environment, "scheduler"))
    assert "minAvailable" not in pdb["spec"]
    assert 1 <= pdb["spec"]["maxUnavailable"] < replicas

    anti = rendered.pod_spec("scheduler")["affinity"]["podAntiAffinity"]
    terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [
        t["podAffinityTerm"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]
    ]
    (term,) = terms
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert matches(term["labelSelector"]["matchLabels"], pod_labels(environment, "scheduler"))


def test_prod_requires_one_scheduler_per_node_and_spreads_zones() -> None:
    spec = render("prod").pod_spec("scheduler")
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (spread,) = spec["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert render("prod").deployment("scheduler")["spec"]["replicas"] >= 3


def test_a_single_dev_scheduler_has_no_disruption_budget() -> None:
    """A PDB over one replica would block every node drain."""
    rendered = render("dev")
    assert rendered.deployment("scheduler")["spec"]["replicas"] == 1
    assert rendered.maybe("PodDisruptionBudget", SCHEDULER) is None


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_probes_are_native_grpc_on_the_port_the_scheduler_serves(environment: str) -> None:
    rendered = render(environment)
    container = rendered.container("scheduler")
    (grpc_port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"]
    listen = env_of(container)["JOBSCHED_LISTEN"]["value"]
    assert listen == f"0.0.0.0:{grpc_port}"

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert set(container[probe]) & {"httpGet", "tcpSocket", "exec"} == set(), probe
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    # Readiness follows the database (NOT_SERVING while it is unreachable); liveness tolerates
    # an outage for minutes instead of restarting every replica.
    assert container["readinessProbe"]["grpc"]["service"] == "jobsched.v1.JobService"
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_services_reach_the_grpc_port(environment: str) -> None:
    rendered = render(environment)
    labels = pod_labels(environment, "scheduler")
    port = rendered.container("scheduler")["ports"][0]
    for name in (SCHEDULER, HEADLESS):
        service = rendered.one("Service", name)
        assert matches(service["spec"]["selector"], labels)
        (grpc,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert grpc["targetPort"] == port["name"] == "grpc"
        assert grpc["appProtocol"] == "grpc"
    headless = rendered.one("Service", HEADLESS)["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is False


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_schedulers_run_without_migrating_and_with_the_config_file(environment: str) -> None:
    rendered = render(environment)
    container = rendered.container("scheduler")
    assert container["args"][:2] == ["scheduler", "--no-migrate"]
    assert env_of(container)["JOBSCHED_CONFIG"]["value"] == "/etc/jobsched/jobsched.toml"
    # No service links: variables like JOBSCHED_SCHEDULER_PORT would look like settings.
    assert rendered.pod_spec("scheduler")["enableServiceLinks"] is False


def test_the_executors_address_is_the_headless_service_through_dns() -> None:
    container = render("prod").container("executor")
    port = render("prod").container("scheduler")["ports"][0]["containerPort"]
    address = env_of(container)["JOBSCHED_ADDRESS"]["value"]
    assert address == f"dns:///{HEADLESS}.{NAMESPACE}.svc.cluster.local:{port}"
