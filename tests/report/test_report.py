"""Reports: every number equals the store's, the HTML is self-contained and renders offline
in headless Chromium with every family's heatmap; compare and export read the same numbers."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from atlas_helpers import INTERRUPT_ENV, PLUGIN, assert_report_matches_store, grid_equal, same, synthetic_run
from optional_deps import missing

from workbench.cli.main import main
from workbench.store import Store

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """A finished sinks + countdown run on a tiny Llama, and its report."""
    results = tmp_path_factory.mktemp("report") / "res"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_FAMILY_PLUGINS", PLUGIN)
        mp.delenv(INTERRUPT_ENV, raising=False)
        assert (
            main(
                [
                    "atlas",
                    str(tiny_model_dir("llama")),
                    "--results",
                    str(results),
                    "--families",
                    "sinks,countdown",
                    "--max-tokens",
                    "32",
                    "--n-prompts",
                    "2",
                    "-q",
                ]
            )
            == 0
        )
        with Store.open(results) as store:
            run_id = store.runs()[0].run_id
        assert main(["report", run_id, "--results", str(results)]) == 0
    folder = results / "runs" / run_id
    return results, run_id, folder / "report.html", folder / "report.json"


def test_report_numbers_equal_the_store(run):
    results, run_id, html_path, json_path = run
    assert_report_matches_store(results, run_id, html_path, json_path, ["sinks", "countdown"])


def test_report_shows_the_sections_the_issue_lists(run):
    _, run_id, html_path, _ = run
    text = html_path.read_text()
    for needle in (
        'data-family="sinks"',
        'data-family="countdown"',
        "Top heads by first_token_mass",
        "with the evidence (removal_loss_delta)",
        "Sink tokens" if "token_sink_frequency" in text else "Hidden sinks",
        "Cross-family view",
        "Run config and versions",
        '"torch"',
        run_id,
    ):
        assert needle in text, needle


def test_report_is_self_contained(run):
    _, _, html_path, _ = run
    text = html_path.read_text()
    assert re.search(r"<script[^>]+src=", text) is None and re.search(r"<link[^>]+href=", text) is None
    plotly_js, ours = re.match(r'.*?<script type="text/javascript">(.*?)</script>(.*)', text, flags=re.S).groups()
    assert len(plotly_js) > 3_000_000 and "plotly.js" in plotly_js[:500]  # plotly.js is inlined
    assert re.search(r"https?://", ours) is None  # nothing of ours points at the network
    assert "Plotly.newPlot" in ours


def test_report_of_an_interrupted_run_says_so(tmp_path):
    with Store.open(tmp_path, write=True) as store:
        run_id = synthetic_run(store, interrupt_at="p2")
    assert main(["report", run_id, "--results", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 0
    text = (tmp_path / "r.html").read_text()
    data = json.loads((tmp_path / "r.json").read_text())
    assert "This run is <b>interrupted</b>" in text and "not finished (2/5 parts done)" in text
    assert data["families"][0]["status"] == "pending" and data["families"][0]["metrics"] == {}


def test_compare_same_geometry(tmp_path, capsys):
    with Store.open(tmp_path, write=True) as store:
        a = synthetic_run(store, seed=0)
        b = synthetic_run(store, seed=1)
        c = synthetic_run(store, seed=0)
        sa, sb = store.scores(a)["countdown"], store.scores(b)["countdown"]
    assert main(["compare", a, b, "--results", str(tmp_path), "--out", str(tmp_path / "ab")]) == 0
    data = json.loads((tmp_path / "ab" / "compare.json").read_text())
    value = next(m for m in data["families"][0]["metrics"] if m["metric"] == "value")
    assert data["same_geometry"] and value["identical"] is False
    assert grid_equal(value["diff"], sb["value"] - sa["value"])
    assert value["max_abs_diff"] == float(np.max(np.abs(sb["value"] - sa["value"])))
    assert value["pearson"] == pytest.approx(float(np.corrcoef(sa["value"].ravel(), sb["value"].ravel())[0, 1]))
    assert data["config_differences"] == [{"key": "seed", "a": 0, "b": 1}]
    assert "countdown" in capsys.readouterr().out
    assert main(["compare", a, c, "--results", str(tmp_path), "--out", str(tmp_path / "ac.html")]) == 0
    data = json.loads((tmp_path / "ac.json").read_text())
    assert all(m["identical"] and m["max_abs_diff"] == 0.0 for m in data["families"][0]["metrics"])


def test_compare_two_models_with_different_geometry(tmp_path):
    with Store.open(tmp_path, write=True) as store:
        a = synthetic_run(store, n_layers=3, n_heads=4, name="org/small")
        b = synthetic_run(store, n_layers=5, n_heads=2, name="org/large")
        sb = store.scores(b)["countdown"]["value"]
    assert main(["compare", a, b, "--results", str(tmp_path), "--out", str(tmp_path / "ab")]) == 0
    data = json.loads((tmp_path / "ab" / "compare.json").read_text())
    value = next(m for m in data["families"][0]["metrics"] if m["metric"] == "value")
    assert data["same_geometry"] is False and "diff" not in value
    assert value["profile_b"] == [float(np.mean(row)) for row in sb]
    assert data["a"]["model"] == "org/small" and data["b"]["model"] == "org/large"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_equals_the_store(run, tmp_path, fmt):
    results, run_id, _, _ = run
    out = tmp_path / fmt
    assert main(["export", run_id, "--results", str(results), "--format", fmt, "--out", str(out)]) == 0
    with Store.open(results) as store:
        rows = store.score_rows(run_id)
        tokens = store.artefacts(run_id, "sinks")["sink_tokens"]
    if fmt == "csv":
        with open(out / "head_scores.csv") as f:
            got = [
                (r["family"], r["metric"], int(r["layer"]), int(r["head"]), float(r["score"]) if r["score"] else math.nan)
                for r in csv.DictReader(f)
            ]
    else:
        import pyarrow.parquet as pq

        t = pq.read_table(out / "head_scores.parquet").to_pylist()
        got = [(r["family"], r["metric"], r["layer"], r["head"], math.nan if r["score"] is None else r["score"]) for r in t]
        assert {r["run_id"] for r in t} == {run_id}
    assert len(got) == len(rows) and all(g[:4] == r[:4] and same(g[4], r[4]) for g, r in zip(got, rows))
    assert (out / f"sinks__sink_tokens.{fmt}").exists() == bool(tokens)
    assert (out / f"runs.{fmt}").exists()


def _png_is_not_blank(path: Path) -> bool:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        length = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return width >= 1000 and height >= 1000 and len(set(raw[:: max(1, len(raw) // 200000)])) > 32


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--window-size=1400,2000",
        # No network at all: every request goes to a dead proxy (the report must not need any).
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
    ]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=180)


def test_report_renders_offline_in_headless_chromium(run, tmp_path):
    if shutil.which(CHROMIUM) is None:
        missing("chromium is not installed (make browser)")
    _, _, html_path, json_path = run
    url = html_path.resolve().as_uri()
    shot = tmp_path / "report.png"
    result = _chromium([f"--screenshot={shot}", url], tmp_path)
    assert shot.exists(), result.stderr
    assert _png_is_not_blank(shot)
    dom = _chromium(["--dump-dom", "--virtual-time-budget=10000", url], tmp_path).stdout
    families = [f["name"] for f in json.loads(json_path.read_text())["families"]]
    assert int(re.search(r'data-figures-drawn="(\d+)"', dom).group(1)) > 0  # the drawing script ran
    for fam in families:
        divs = re.findall(
            rf'<div class="wb-figure wb-heatmap[^"]*" id="[^"]+" data-family="{fam}" data-metric="([^"]+)">(.*?)</script>',
            dom,
            flags=re.S,
        )
        assert divs, f"no heatmap for {fam}"
        for metric, inner in divs:
            assert "main-svg" in inner, f"{fam}/{metric} heatmap was not drawn"
