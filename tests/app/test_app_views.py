"""The dashboard's views without a browser: store reads, blocks, exports, and unreadable stores."""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import pytest

from workbench.app import blocks as B
from workbench.app.callbacks import view_blocks
from workbench.app.data import StoreUnavailable, head_score_rows, mentions, rank_of, reading
from workbench.app.export import render_html, write_export
from workbench.app.layout import Route, parse_route
from workbench.app.server import AppState
from workbench.store import Store


def flat(blocks):
    for b in blocks:
        yield b
        if isinstance(b, (B.Section, B.Grid)):
            yield from flat(b.blocks)


def test_routes():
    assert parse_route("/", "") == Route("runs")
    assert parse_route("/run/abc", "") == Route("atlas", "abc")
    assert parse_route("/run/abc/head/L1H2", "") == Route("head", "abc", "L1H2")
    assert parse_route("/run/abc/playground", "?heads=L0H1,L1H0") == Route("playground", "abc", query={"heads": "L0H1,L1H0"})
    assert parse_route("/compare", "?a=x&b=y").query == {"a": "x", "b": "y"}
    assert parse_route("/nope/x/y", "").view == "missing"


def test_head_view_shows_that_heads_numbers(synthetic_results):
    results, a, _ = synthetic_results
    state = AppState(results)
    blocks = list(flat(view_blocks(state, Route("head", a, "L0H1"))))
    table = next(b for b in blocks if isinstance(b, B.Table) and b.name == "head-scores")
    with Store.open(results) as store:
        expected = store.scores(a)
    got = {(r["family"], r["metric"]): r["value"] for r in table.rows}
    for fam, hs in expected.items():
        for metric, values in hs.metrics.items():
            v = got[(fam, metric)]
            assert (np.isnan(v) and np.isnan(values[0, 1])) or v == values[0, 1]
    # rank among heads, sink tokens of this head, its temporal class and the spectral plot
    first = next(r for r in table.rows if r["metric"] == "first_token_mass")
    assert first["rank"] == f"{rank_of(expected['sinks'].metrics['first_token_mass'], 0, 1)[0]}/8"
    sinks = next(b for b in blocks if isinstance(b, B.Table) and b.name == "sink-tokens")
    assert sinks.rows[0]["token"] == "w7"
    assert any(isinstance(b, B.Table) and b.name == "temporal-class" and b.rows[0]["label"] == "sequential" for b in blocks)
    assert {b.name for b in blocks if isinstance(b, B.Figure)} >= {"offset-profile", "spectrum"}
    # the evidence: the evidence metric and the JSON artefact that names the head
    ev = next(b for b in blocks if isinstance(b, B.Table) and b.name == "evidence")
    assert ev.rows[0]["check"] == "removal_loss_delta"
    assert any(isinstance(b, B.Heading) and "removal_check" in b.text for b in blocks)


def test_head_view_rejects_bad_heads(synthetic_results):
    results, a, _ = synthetic_results
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="out of range"):
        view_blocks(AppState(results), Route("head", a, "L5H0"))
    with pytest.raises(WorkbenchError, match="cannot read head address"):
        view_blocks(AppState(results), Route("head", a, "banana"))


def test_atlas_and_runs_views(synthetic_results):
    results, a, b = synthetic_results
    state = AppState(results)
    runs = next(x for x in view_blocks(state, Route("runs")) if isinstance(x, B.Table))
    assert {r["run"] for r in runs.rows} == {a, b} and all(r["status"] == "complete" for r in runs.rows)
    figs = [
        x for x in flat(view_blocks(state, Route("atlas", a))) if isinstance(x, B.Figure) and not x.name.startswith("causal-")
    ]
    assert [f.graph_id for f in figs] == [
        {"type": "family-graph", "family": "sinks"},
        {"type": "family-graph", "family": "temporal"},
    ]
    with Store.open(results) as store:
        want = store.scores(a)["sinks"].metrics["first_token_mass"]
    z = np.array(figs[0].fig.data[0].z, dtype=float)
    np.testing.assert_array_equal(z, want)
    export = [x for x in flat(view_blocks(state, Route("atlas", a), for_export=True)) if isinstance(x, B.Figure)]
    every = [x for x in export if not x.name.startswith("causal-")]
    assert len(every) == 3  # every metric of every family in an export (plus the causal checks' figures)


def test_compare_view_difference(synthetic_results):
    results, a, b = synthetic_results
    blocks = list(flat(view_blocks(AppState(results), Route("compare", query={"a": a, "b": b, "family": "sinks"}))))
    diff = next(x for x in blocks if isinstance(x, B.Figure) and x.name == "compare-diff")
    with Store.open(results) as store:
        va = store.scores(a)["sinks"].metrics["first_token_mass"]
        vb = store.scores(b)["sinks"].metrics["first_token_mass"]
    np.testing.assert_allclose(np.array(diff.fig.data[0].z, dtype=float), vb - va)
    stats = next(x for x in blocks if isinstance(x, B.Table) and x.name == "compare-stats").rows[0]
    assert stats["max |B-A|"] == pytest.approx(float(np.max(np.abs(vb - va))))


def test_missing_and_corrupt_stores_are_readable(tmp_path):
    with pytest.raises(StoreUnavailable) as missing:
        with reading(tmp_path / "nowhere"):
            pass
    assert "does not exist" in missing.value.message and missing.value.hint
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "workbench.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailable) as corrupt:
        with reading(bad) as store:
            store.runs()
    assert "not a database" in corrupt.value.message
    # a page never raises: the body callback turns it into a notice
    from workbench.app.callbacks import explain

    html = str(explain(corrupt.value))
    assert "not a database" in html and "Traceback" not in html


def test_damaged_artefact_keeps_the_page(synthetic_results, tmp_path):
    import shutil

    results, a, _ = synthetic_results
    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    (copy / "runs" / a / "sinks" / "sink_tokens.json").write_text("{not json")
    blocks = list(flat(view_blocks(AppState(copy), Route("head", a, "L0H1"))))
    assert any(isinstance(b, B.Notice) and "sinks artefacts" in b.text for b in blocks)
    assert any(isinstance(b, B.Table) and b.name == "head-scores" for b in blocks)


def test_export_is_standalone(synthetic_results, tmp_path):
    results, a, _ = synthetic_results
    blocks = view_blocks(AppState(results), Route("head", a, "L0H1"), for_export=True)
    path = write_export(tmp_path, "head.html", "L0H1", blocks)
    text = path.read_text()
    assert text.count("<script") >= 3 and "Plotly" in text
    assert not re.search(r"<script[^>]+src=", text), "an export must not load scripts from anywhere"
    with Store.open(results) as store:
        value = float(store.scores(a)["sinks"].metrics["first_token_mass"][0, 1])
    assert f'data-value="{value!r}"' in text
    assert render_html("t", [B.Text("only text")]).count("<script") == 0


def test_helpers():
    assert mentions({"top": ["L0H1", "L1H0"], "x": {"y": ["L0H1"]}}, "L0H1") == ["top[0]", "x.y[0]"]
    arr = np.array([[1.0, np.nan], [3.0, 2.0]])
    assert rank_of(arr, 1, 0) == (1, 3) and rank_of(arr, 0, 1) == (None, 3)


def test_rows_survive_nan(synthetic_results):
    results, a, _ = synthetic_results
    with Store.open(results) as store:
        rows = head_score_rows(store, a, 1, 3)
    delta = next(r for r in rows if r["metric"] == "removal_loss_delta")
    assert np.isnan(delta["value"]) and delta["rank"] == "–"


def test_reading_releases_the_store(synthetic_results):
    results, _, _ = synthetic_results
    with reading(results) as store:
        conn = store.conn
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")


def test_every_view_exports(synthetic_results, tmp_path):
    results, a, b = synthetic_results
    state = AppState(results)
    for route in (
        Route("runs"),
        Route("atlas", a),
        Route("head", a, "L1H3"),
        Route("playground", a),
        Route("compare", query={"a": a, "b": b}),
    ):
        path = write_export(tmp_path, f"{route.view}.html", route.view, view_blocks(state, route, for_export=True))
        text = path.read_text()
        assert text.startswith("<!DOCTYPE html>") and not re.search(r"<script[^>]+src=", text)
        if route.view in ("atlas", "head", "compare"):
            assert "Plotly.newPlot" in text or "Plotly" in text
