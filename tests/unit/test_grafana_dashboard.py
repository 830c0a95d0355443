"""deploy/grafana/mesh-node.json queries only metrics meshd exports (meshd/metrics.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from meshd.metrics import NodeSnapshot, Snapshot, SnapshotCollector

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "mesh-node.json"


def _exported() -> set[str]:
    """Every series name a scrape can show, counters with their _total."""
    snapshot = Snapshot(node=NodeSnapshot(settlement_latency=1.0,
                                          tasks={("storage", "STORE_FILE", "done"): 1},
                                          plugins=(("storage", "running", 0, False),)))
    names: set[str] = set()
    for family in SnapshotCollector(lambda: snapshot).collect():
        names |= {sample.name for sample in family.samples} | {family.name}
        if family.type == "counter":  # a labelled one may have no sample yet
            names.add(family.name + "_total")
    return names


def test_every_panel_queries_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(?:mesh|libp2p)_[a-z_]+", target["expr"]))
    assert used, "no metric in the dashboard"
    assert used <= exported, sorted(used - exported)
    # The node-wide ones (issue 17), not only p2p.
    assert {"mesh_ledger_final_epoch", "mesh_ledger_settlement_latency_seconds",
            "mesh_tasks", "mesh_plugin_restarts_total"} <= used


def test_the_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "mesh-node" and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
