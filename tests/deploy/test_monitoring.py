"""deploy/prometheus and deploy/grafana: the alert rules pass `promtool check rules` and their
unit tests (tests/deploy/lusifer-rules.test.yml: each alert fires on the series that should
fire it and stays quiet otherwise), the Prometheus configuration passes `promtool check
config`, and every metric the dashboard and the rules name is one that `lusifer metrics` or
Flower exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import flower
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from coordinator.metrics.broker import QueueFigures
from coordinator.metrics.collector import LusiferCollector
from tests.coordinator.metrics.sample_db import sample_database
from tests.integration.metrics_server import parse

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "lusifer-rules.yml"
RULE_TESTS = Path(__file__).with_name("lusifer-rules.test.yml")
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "lusifer-dashboard.json"
METRIC = re.compile(r"\b((?:lusifer|flower)_[a-z_]+)\b")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: scripts/install.sh installs Debian's prometheus")
        pytest.skip("promtool is not installed (Debian's prometheus; scripts/install.sh as root)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_alert_rules_are_valid_and_fire_when_they_should() -> None:
    tool = promtool()
    checked = run(tool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run(tool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert of the file is exercised by the unit tests.
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == alerts


def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    tool = promtool()
    # The configuration names the rules where the compose volume puts them.
    config = PROMETHEUS_CONFIG.read_text().replace("/etc/prometheus/lusifer-rules.yml", str(RULES))
    copy = tmp_path / "prometheus.yml"
    copy.write_text(config)
    checked = run(tool, "check", "config", str(copy))
    assert checked.returncode == 0, checked.stdout + checked.stderr


class QueueOf:
    """A broker holding a few messages (in-process: only the metric names matter here)."""

    def read(self) -> QueueFigures:
        return QueueFigures({"lusifer": 3}, unacked=2)


def exported_names(tmp_path: Path) -> set[str]:
    """Every sample name `lusifer metrics` exports, and Flower's metric names."""
    collector = LusiferCollector(
        sample_database(tmp_path / "m.db"),
        QueueOf(),  # type: ignore[arg-type]
        window=timedelta(hours=24),
        max_runs=10,
        timeout_s=5.0,
        min_interval_s=0.0,
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    names = {name for name, _ in parse(generate_latest(registry).decode()).samples}
    flower_source = "\n".join(p.read_text() for p in Path(flower.__file__).parent.rglob("*.py"))
    return names | set(re.findall(r"['\"](flower_[a-z_]+)['\"]", flower_source))


def test_dashboard_and_rules_name_only_exported_metrics(tmp_path: Path) -> None:
    exported = exported_names(tmp_path)
    assert "flower_worker_online" in exported
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append(dashboard["templating"]["list"][0]["query"]["query"])
    rules = yaml.safe_load(RULES.read_text())["groups"]
    exprs += [r["expr"] for g in rules for r in g["rules"]]
    named = {m for e in exprs for m in METRIC.findall(e)}
    assert named, "no metric found in the expressions"
    assert named - exported == set()
    # Grafana imports it: a data source input, unique panel ids, every panel queried.
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(
        p["targets"] and p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in dashboard["panels"]
    )
