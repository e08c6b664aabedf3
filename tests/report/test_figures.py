"""Figure builders are pure and carry the numbers unchanged; the family-specific report views
(retrieval hits, temporal classes, sink tokens) appear when a family writes those tables."""

from __future__ import annotations

import json

import numpy as np
from atlas_helpers import FakeModel, json_scripts

from workbench.analysis.scores import HeadScores
from workbench.atlas.runner import run_families, start_run
from workbench.families.base import Family, PartResult
from workbench.families.context import RunContext
from workbench.report import figures as F
from workbench.report.html import write_report
from workbench.store import Store


def test_head_heatmap_keeps_values_and_gaps():
    grid = [[0.5, None, 1e-9], [2.0, 3.25, None]]
    fig = F.head_heatmap(grid, "t", "m")
    spec = json.loads(fig.to_json())
    assert spec["data"][0]["z"] == grid and spec["layout"]["yaxis"]["autorange"] == "reversed"


def test_class_heatmap_codes_each_class():
    rows = [{"layer": 0, "head": 1, "label": "seasonal"}, {"layer": 1, "head": 0, "label": "re-access"}]
    spec = json.loads(F.class_heatmap(rows, 2, 2, "t", "label").to_json())
    assert spec["data"][0]["z"] == [[None, 1], [0, None]]
    assert spec["data"][0]["colorbar"]["ticktext"] == ["re-access", "seasonal"]


class ShowcaseFamily(Family):
    """Writes the tables the report has special views for."""

    name = "showcase"
    primary_metric = "score"

    def members(self, scores):
        return [(0, 0), (1, 1)]

    def run_part(self, model, ctx, part):
        g = model.geometry
        hs = HeadScores(self.name, g.n_layers, g.n_heads)
        hs.add("score", np.arange(g.n_layers * g.n_heads, dtype=float).reshape(g.n_layers, g.n_heads))
        classes = [
            {"input": view, "layer": layer, "head": h, "label": ["sequential", "seasonal", "re-access"][(layer + h) % 3]}
            for view in ("text", "periodic")
            for layer in range(g.n_layers)
            for h in range(g.n_heads)
        ]
        hits = [{"trial": 0, "layer": 1, "head": 2, "position": 17, "recall": 1.0}]
        freq = [{"token": "<s>", "times_sink": 9, "times_seen": 9, "rate": 1.0}]
        return PartResult(hs, {"temporal_classes": classes, "retrieval_hits": hits, "token_sink_frequency": freq})


class OtherFamily(ShowcaseFamily):
    name = "other"

    def members(self, scores):
        return [(1, 1)]


def test_special_views_and_cross_family(tmp_path):
    model = FakeModel(2, 3)
    fams = {"showcase": ShowcaseFamily(), "other": OtherFamily()}
    with Store.open(tmp_path, write=True) as store:
        writer = start_run(store, model, fams, RunContext(), {"model": model.name})
        run_families(writer, model, fams, RunContext())
        html_path, json_path = write_report(store, writer.run_id)
    text = html_path.read_text()
    assert "<h3>Temporal classes</h3>" in text and "<h3>Retrieval hits</h3>" in text and "<h3>Sink tokens</h3>" in text
    specs = json_scripts(text)
    periodic = specs["fig-showcase-temporal-classes-periodic-spec"]["data"][0]
    assert periodic["z"] == [[2, 1, 0], [1, 0, 2]]  # codes: re-access 0, seasonal 1, sequential 2 (alphabetical)
    data = json.loads(json_path.read_text())
    shared = data["cross_family"]["shared_heads"]
    assert {r["head"]: r["claimed_by"] for r in shared if len(r["claimed_by"]) > 1} == {"L1H1": ["showcase", "other"]}
    assert data["cross_family"]["claimed_counts"] == [[1, 0, 0], [0, 2, 0]]
    assert "L1H1" in text and "Heads in more than one family" in text
