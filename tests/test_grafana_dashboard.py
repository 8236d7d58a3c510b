"""``config/grafana-dashboard.json`` queries only metrics the endpoint exports, with the labels
they carry: checked against the metrics endpoint serving a real engine's snapshot (a sim run
with trades)."""
import dataclasses
import io
import json
import re
from decimal import Decimal as D
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from karb.config import parse_config
from karb.engine import Engine
from karb.exchanges.factory import make_client
from karb.metrics import MetricsServer
from karb.model import Venue
from karb.sim.cluster import SimCluster
from karb.status import EngineSnapshot
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text(encoding="utf-8"))
METRIC = re.compile(r"\bkarb_[a-z0-9_]+")
SELECTOR = re.compile(r"(karb_[a-z0-9_]+)\{([^}]*)\}")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# the ratelimit branch exports these; until it is merged the snapshot has no rate_limits
RATE_LIMITS_MERGED = "rate_limits" in {f.name for f in dataclasses.fields(EngineSnapshot)}


def panels():
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def test_dashboard_is_importable_grafana_json():
    assert DASHBOARD["uid"] and DASHBOARD["schemaVersion"] >= 36
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"], panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        for target in panel["targets"]:
            assert METRIC.search(target["expr"]), (panel["title"], target["expr"])
    titles = " | ".join(p["title"] for p in panels()).lower()
    for topic in ("feed lag", "frame → signal", "signal → legs", "trades", "pnl", "balances",
                  "circuit", "rate-limit", "alerts"):
        assert topic in titles


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Sample name -> label -> values, scraped from the metrics endpoint serving the snapshot of a
    sim engine that traded, with the conditions a calm run lacks added (a halt, a residual, an
    undelivered alert)."""
    tmp_path = tmp_path_factory.mktemp("dash")
    data = yaml.safe_load((ROOT / "config" / "sim.yaml").read_text())
    data["markets"] = ["KRW-BTC"]
    data["sim"]["markets"] = {"KRW-BTC": data["sim"]["markets"]["KRW-BTC"]}
    data["sim"]["update_hz"] = 40
    data["journal"] = {"path": str(tmp_path / "j.sqlite")}
    data["risk"]["kill_switch_file"] = str(tmp_path / "KILL")
    data["log"] = {"file": None}
    data["monitor"] = {"metrics_port": 0}
    config = parse_config(data)
    with SimCluster.from_config(config).start() as cluster:
        config = cluster.apply_to(config)
        clients = {v: make_client(v, config, cluster.credentials(v)) for v in Venue}
        engine = Engine(config, clients, "sim", out=io.StringIO(), panel=False)
        engine.start()
        try:
            wait_until(lambda: engine.snapshot().feeds["upbit"].state == "connected", timeout=10)
            cluster.dislocate("KRW-BTC", Venue.BITHUMB, bps=80, seconds=3)
            wait_until(lambda: engine.snapshot().successes >= 1, timeout=20, message="a trade")
            running = engine.snapshot()
        finally:
            engine.stop()
        snapshot = dataclasses.replace(
            running, halts={"daily loss": "daily realised loss reached the limit"},
            residual={"BTC": D("0.001")}, alert_failures={"telegram": 1})
    server = MetricsServer("127.0.0.1", 0, lambda: snapshot).start()
    try:
        text = requests.get(server.url, timeout=5).text
    finally:
        server.stop()
    # the series names Prometheus stores are the text's own; the parser appends _total to a
    # counter's samples that lack it (karb_fees_krw)
    raw = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    names: dict[str, dict[str, set[str]]] = {}  # series name -> label -> values
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name if sample.name in raw else sample.name.removesuffix("_total")
            assert name in raw, name
            labels = names.setdefault(name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return names


@pytest.mark.integration
@pytest.mark.parametrize("panel", panels(), ids=lambda p: p["title"])
def test_every_panel_queries_metrics_the_endpoint_exports_with_their_labels(exported, panel):
    for target in panel["targets"]:
        expr = target["expr"]
        metrics = set(METRIC.findall(expr))
        if not RATE_LIMITS_MERGED and all(m.startswith("karb_ratelimit_") for m in metrics):
            continue
        for metric in metrics:
            assert metric in exported, f"{panel['title']}: {metric} is not exported"
        for metric, matchers in SELECTOR.findall(expr):
            for label in re.findall(r"(\w+)\s*=~?", matchers):
                assert label in exported[metric], f"{metric} has no label {label}"
        labels = set().union(*(set(exported[m]) for m in metrics))
        for label in LEGEND_LABEL.findall(target["legendFormat"]):
            assert label in labels, f"{panel['title']}: legend label {label} not on {metrics}"


@pytest.mark.integration
def test_latency_panels_name_stages_the_executor_reports(exported):
    stages = {s for p in panels() for t in p["targets"]
              for s in re.findall(r'stage="(\w+)"', t["expr"])}
    assert stages == {"frame_to_signal", "signal_to_sent", "sent_to_acked"}
    assert stages <= exported["karb_stage_latency_seconds"]["stage"]
