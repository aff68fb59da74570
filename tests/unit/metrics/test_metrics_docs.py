"""The metrics page, the dashboard and the alert rules name only series the engine has, and the page names all."""

import json
import re
from pathlib import Path

import yaml

from salt_callbacks.metrics.registry import EngineMetrics

DOCS = Path(__file__).resolve().parents[3] / "docs"
SERIES_RE = re.compile(r"\bsalt_callbacks_[a-z_]+")


def families():
    names = set()
    for family in EngineMetrics("m", "0").registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def known(name, names):
    return name in names or any(name == f + suffix for f in names for suffix in ("_bucket", "_sum", "_count"))


def test_the_metrics_page_lists_exactly_the_series():
    table = set(re.findall(r"^\| `(salt_callbacks_[a-z_]+)` \|", (DOCS / "metrics.md").read_text(), re.M))
    assert table == families()


def test_dashboard_queries_use_only_real_series_and_the_master_filter():
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    names = families()
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert exprs
    for expr in exprs:
        for name in SERIES_RE.findall(expr):
            assert known(name, names), f"{name} in {expr}"
        assert 'master=~"$master"' in expr
    used = {SERIES_RE.findall(e)[0].removesuffix("_bucket") for e in exprs}
    assert families() <= used


def test_alert_rules_are_prometheus_rule_groups_over_real_series():
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    names = families()
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert len({rule["alert"] for rule in alerts}) == len(alerts) >= 5
    for rule in alerts:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]
        for name in SERIES_RE.findall(rule["expr"]):
            assert known(name, names), f"{name} in {rule['alert']}"
