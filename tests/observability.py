"""The PromQL of deploy/grafana/jobsched.json (every panel target's `expr`) and of
deploy/prometheus/alerts.yml (every rule's `expr`), and the jobsched metric names they query.

A name is any identifier starting `jobsched_` outside a string literal (no label of ours starts
so) — enough for our expressions, which use no recording rules; `up` and other Prometheus-made
series are not ours to check."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "jobsched.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_NAME = re.compile(r"\b(jobsched_[a-zA-Z0-9_:]*)")


def metric_names(expression: str) -> set[str]:
    return set(_NAME.findall(_STRING.sub('""', expression)))


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(_panels(panel.get("panels", [])))
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_metric_names() -> set[str]:
    return set().union(*(metric_names(e) for e in dashboard_expressions()))


def alert_metric_names() -> set[str]:
    return set().union(*(metric_names(str(rule["expr"])) for rule in alert_rules()))
