"""The observability files: deploy/prometheus/alerts.yml passes `promtool check rules` and its
unit tests (alerts_test.yml), deploy/prometheus/prometheus.yml passes `promtool check config`,
the Grafana dashboard is well formed and has the issue's panels, and the compose file's
observability profile and the Helm chart wire them to the metrics ports. (That every metric
they query exists is tests/e2e/test_metrics_workload.py's: it needs a real scrape.)

promtool comes with Debian's prometheus package: `make promtool` (a prerequisite of `make
test`) installs it. A test that needs it and cannot find it FAILS and says so; it never skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.chart import CHART, REPO, env_of, matches, render
from tests.deploy.test_compose import bind_mounts, services
from tests.observability import ALERTS, DASHBOARD, alert_rules, dashboard_expressions

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
METRICS_PORT = 9464
ALERT_NAMES = {
    "JobschedNoLeader",
    "JobschedQueueOldestJobWaiting",
    "JobschedDeadLettersGrowing",
    "JobschedExecutorsGone",
    "JobschedDatabaseUnready",
}


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: `make promtool` (apt-get install prometheus) puts it "
            "on PATH",
            pytrace=False,
        )
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alerting_rules_pass_promtool_check_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in result.stdout


def test_promtool_would_refuse_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(
        ALERTS.read_text().replace("sum(jobsched_leader) < 1", "sum(jobsched_leader <")
    )
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0


def test_each_alert_fires_on_its_case_and_not_otherwise() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tested
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == ALERT_NAMES


def test_the_alerts_are_the_issues() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == ALERT_NAMES
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_prometheus_config_passes_promtool_and_loads_the_alerts(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    # promtool reads the rule files: point it at the real one.
    config["rule_files"] = [str(ALERTS)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_compose_prometheus_scrapes_every_scheduler_and_executor_on_its_metrics_port() -> None:
    everything = services()
    jobs = scrape_jobs()
    schedulers = [n for n, s in everything.items() if s.get("command", [""])[0] == "scheduler"]
    targets = jobs["jobsched-scheduler"]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{name}:{METRICS_PORT}" for name in schedulers)
    (executors,) = jobs["jobsched-executor"]["dns_sd_configs"]
    assert executors["names"] == ["executor"]
    assert executors["port"] == METRICS_PORT
    for name in [*schedulers, "executor"]:
        listen = everything[name]["environment"]["JOBSCHED_METRICS_LISTEN"]
        assert listen == f"0.0.0.0:{METRICS_PORT}", name
        # Not published on the host: Prometheus reaches it on the compose network.
        assert all(str(METRICS_PORT) not in p for p in everything[name].get("ports", [])), name


def test_compose_prometheus_mounts_its_config_and_the_alerts_where_they_are_read() -> None:
    mounts = dict(bind_mounts(services()["prometheus"]))
    assert mounts[PROMETHEUS_DIR / "prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts[ALERTS] == "/etc/prometheus/alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services()["prometheus"]["command"]


def test_compose_grafana_provisions_the_dashboard_and_the_data_source() -> None:
    mounts = dict(bind_mounts(services()["grafana"]))
    assert mounts[PROVISIONING] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "jobsched.yml").read_text())
    (entry,) = provider["providers"]
    assert mounts[DASHBOARD] == f"{entry['options']['path']}/{DASHBOARD.name}"
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")


def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in items:
        found.append(panel)
        found.extend(panels(panel.get("panels", [])))
    return found


def test_the_dashboard_is_well_formed_and_has_the_issues_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "jobsched"
    every = panels(dashboard["panels"])
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    titles = " | ".join(p["title"] for p in every).lower()
    for wanted in (
        "by state",
        "submit, start and finish",
        "success rate",
        "queue wait",
        "run time",
        "why jobs wait",
        "executors",
        "slot use",
        "leader",
        "connection pool",
        "transaction",
        "grpc",
        "handler duration",
    ):
        assert wanted in titles, wanted
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in every:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            used = {name for name in variables if f"${name}" in target["expr"]}
            assert used <= variables
        # Panels side by side: nothing wider than the grid.
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    assert len(dashboard_expressions()) >= 20


def test_the_charts_alerts_are_a_copy_of_the_deploy_file() -> None:
    assert (CHART / "files" / "alerts.yml").read_text() == ALERTS.read_text()


def test_the_chart_wires_metrics_monitors_and_alerts_when_asked() -> None:
    rendered = render(
        "prod",
        "metrics.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
    )
    for role in ("scheduler", "executor"):
        container = rendered.container(role)
        listen = env_of(container)["JOBSCHED_METRICS_LISTEN"]["value"]
        assert listen == f"0.0.0.0:{METRICS_PORT}", role
        (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
        assert port["containerPort"] == METRICS_PORT, role
    (pods,) = rendered.all("PodMonitor")
    executor_labels = rendered.deployment("executor")["spec"]["template"]["metadata"]["labels"]
    assert matches(pods["spec"]["selector"]["matchLabels"], executor_labels)
    (rule,) = rendered.all("PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    # Executors accept the scrapers (and no one else) once they serve metrics.
    policies = {p["metadata"]["name"]: p for p in rendered.all("NetworkPolicy")}
    executor_policy = policies[rendered.deployment("executor")["metadata"]["name"]]
    (ingress,) = executor_policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert ingress["from"]


def test_the_chart_renders_no_monitor_rule_or_metrics_port_by_default() -> None:
    rendered = render("prod")
    assert rendered.all("PodMonitor") == rendered.all("PrometheusRule") == []
    for role in ("scheduler", "executor"):
        assert "JOBSCHED_METRICS_LISTEN" not in env_of(rendered.container(role)), role
    # A rule needs metrics: without them it is not rendered.
    assert render("prod", "metrics.prometheusRule.enabled=true").all("PrometheusRule") == []


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query, as a recording rule, with Grafana's variables
    replaced by what they stand for."""
    replacements = {"$__rate_interval": "5m", "$queue": ".*"}
    rules = []
    for i, expression in enumerate(dashboard_expressions()):
        for variable, value in replacements.items():
            expression = expression.replace(variable, value)
        assert "$" not in expression, expression
        rules.append({"record": f"jobsched:dashboard_panel_{i}", "expr": expression})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
