"""Test doubles for the batch path: a multi-part family whose parts can be made slow or
interrupted, a synthetic-run writer, and store snapshots (importable from every test folder)."""

from __future__ import annotations

import hashlib
import html as htmllib
import json
import math
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.analysis.scores import HeadScores
from workbench.families.base import Family, PartResult
from workbench.store import Store

TESTS_DIR = Path(__file__).resolve().parent
PLUGIN = "atlas_helpers:CountdownFamily"

# Environment knobs read by CountdownFamily (set them in the subprocess / with monkeypatch):
SECONDS_ENV = "WB_TEST_PART_SECONDS"  # sleep per part
MARKERS_ENV = "WB_TEST_MARKERS"  # file: one line "<part>" appended when a part starts computing
INTERRUPT_ENV = "WB_TEST_INTERRUPT_AT"  # part name: raise KeyboardInterrupt when this part starts


@dataclass(frozen=True)
class CountdownConfig:
    n_parts: int = 5
    threshold: float = 0.8


class CountdownFamily(Family):
    """Five parts; part i scores the heads with (layer * H + head) % n_parts == i from the seeded rng."""

    name = "countdown"
    config_class = CountdownConfig
    description = "test family: several resumable parts"
    primary_metric = "value"
    evidence_metric = "noise"

    def parts(self, model, ctx):
        return [f"p{i}" for i in range(self.config.n_parts)]

    def members(self, scores):
        return [(int(a), int(b)) for a, b in zip(*np.nonzero(scores["value"] > self.config.threshold))]

    def run_part(self, model, ctx, part):
        markers = os.environ.get(MARKERS_ENV)
        if markers:
            with open(markers, "a") as f:
                f.write(part + "\n")
        if os.environ.get(INTERRUPT_ENV) == part:
            raise KeyboardInterrupt
        seconds = float(os.environ.get(SECONDS_ENV, "0") or 0)
        steps = 10
        for i in range(steps):
            time.sleep(seconds / steps)
            ctx.report("countdown: waiting", i + 1, steps)
        geo = model.geometry
        L, H = geo.n_layers, geo.n_heads
        rng = ctx.rng(self.name, part)
        idx = int(part[1:])
        value = np.full((L, H), np.nan)
        noise = np.full((L, H), np.nan)
        for layer in range(L):
            for h in range(H):
                if (layer * H + h) % self.config.n_parts == idx:
                    value[layer, h] = rng.random()
                    noise[layer, h] = rng.normal()
        scores = HeadScores(self.name, L, H)
        scores.add("value", value, "seeded random value")
        scores.add("noise", noise, "seeded normal noise")
        artefacts = {"trace": rng.random(4), "rows": [{"part": part, "x": float(rng.random()), "nan": float("nan")}]}
        return PartResult(scores, artefacts, {"part": part, "n_scored": int(np.isfinite(value).sum())})


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a `python -m workbench` subprocess that knows the countdown family."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["WORKBENCH_FAMILY_PLUGINS"] = PLUGIN
    env.update(extra)
    return env


def store_snapshot(results: Path) -> dict:
    """Everything an 'untouched' check compares: all table rows, and every file's hash under runs/."""
    out: dict = {}
    db = results / "workbench.sqlite"
    if db.exists():
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
                out[table] = sorted(map(repr, conn.execute(f"SELECT * FROM {table}").fetchall()))
        finally:
            conn.close()
    files = {}
    for p in sorted((results / "runs").rglob("*")) if (results / "runs").exists() else []:
        if p.is_file():
            files[str(p.relative_to(results))] = hashlib.sha256(p.read_bytes()).hexdigest()
    out["files"] = files
    return out


def normalised_rows(store, run_id):
    """Score rows with NaN made comparable."""
    return [(f, m, layer, h, None if s != s else s) for f, m, layer, h, s in store.score_rows(run_id)]


def family_results(store, run_id):
    """Per family: summary, members and every artefact (arrays as lists), for equality checks."""
    out = {}
    for fam in store.families(run_id):
        arts = store.artefacts(run_id, fam.family) if fam.status == "done" else {}
        out[fam.family] = {
            "status": fam.status,
            "summary": fam.summary,
            "members": fam.members,
            "artefacts": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in arts.items()},
        }
    return out


# -- runs without a real model ------------------------------------------------------------------------


class FakeGeometry:
    def __init__(self, n_layers: int, n_heads: int) -> None:
        self.n_layers, self.n_heads = n_layers, n_heads

    def to_dict(self) -> dict:
        return {"n_layers": self.n_layers, "n_heads": self.n_heads, "head_to_kv": [h // 2 for h in range(self.n_heads)]}


class FakeSource:
    def __init__(self, spec: str) -> None:
        self.spec, self.kind, self.path, self.revision = spec, "hub", None, "0" * 40


class FakeModel:
    """Enough of `Model` for families that only read the geometry (the countdown family)."""

    def __init__(self, n_layers: int = 3, n_heads: int = 4, name: str = "fake/model") -> None:
        self.geometry = FakeGeometry(n_layers, n_heads)
        self.source = FakeSource(name)
        self.name = name


def synthetic_run(
    store,
    n_layers: int = 3,
    n_heads: int = 4,
    seed: int = 0,
    n_parts: int = 5,
    name: str = "fake/model",
    interrupt_at: str | None = None,
) -> str:
    """A countdown run written through the real runner, without torch; optionally interrupted."""
    from workbench.atlas.runner import run_families, start_run
    from workbench.families.context import RunContext

    model = FakeModel(n_layers, n_heads, name)
    fams = {"countdown": CountdownFamily(CountdownConfig(n_parts=n_parts))}
    ctx = RunContext(seed=seed)
    writer = start_run(store, model, fams, ctx, {"model": name, "families": ["countdown"], "seed": seed})
    previous = os.environ.pop(INTERRUPT_ENV, None)
    if interrupt_at:
        os.environ[INTERRUPT_ENV] = interrupt_at
    try:
        run_families(writer, model, fams, ctx)
    except KeyboardInterrupt:
        pass
    finally:
        os.environ.pop(INTERRUPT_ENV, None)
        if previous is not None:
            os.environ[INTERRUPT_ENV] = previous
    return writer.run_id


# -- report checks ---------------------------------------------------------------------------------------


def json_scripts(text: str) -> dict[str, object]:
    found = re.findall(r'<script type="application/json" id="([^"]+)">(.*?)</script>', text, flags=re.S)
    return {ident: json.loads(body.replace("<\\/", "</")) for ident, body in found}


def same(a, b) -> bool:
    """Exact equality with None standing for NaN."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def grid_equal(grid, array) -> bool:
    return np.shape(array) == (len(grid), len(grid[0])) and all(
        same(grid[i][j], float(array[i, j])) for i in range(len(grid)) for j in range(len(grid[0]))
    )


def assert_report_matches_store(results, run_id, html_path, json_path, families=None):
    """Every number in report.json, the embedded data, the heatmaps and the top-head tables equals the store's."""
    summary = json.loads(json_path.read_text())
    text = html_path.read_text()
    scripts = json_scripts(text)
    assert scripts["wb-report-data"] == summary  # the HTML embeds exactly the JSON summary
    with Store.open(results) as store:
        scores = store.scores(run_id)
        fams = {f.family: f for f in store.families(run_id)}
        artefacts = {name: store.artefacts(run_id, name) for name in fams}
        info = store.run(run_id)
    assert summary["run"]["run_id"] == run_id and summary["config"] == info.config and summary["versions"] == info.versions
    if families is not None:
        assert [f["name"] for f in summary["families"]] == families
    n_checked = 0
    for fam in summary["families"]:
        hs = scores[fam["name"]]
        assert list(fam["metrics"]) == list(hs.metrics)
        for metric, grid in fam["metrics"].items():
            assert grid_equal(grid, hs[metric])
            # The heatmap drawn for this metric carries the same numbers.
            (spec,) = [v for k, v in scripts.items() if k == f"fig-{fam['name']}-{metric}-spec"]
            assert grid_equal(spec["data"][0]["z"], hs[metric])
            n_checked += hs[metric].size
        assert fam["summary"] == json.loads(json.dumps(fams[fam["name"]].summary))
        assert fam["members"] == [f"L{a}H{b}" for a, b in fams[fam["name"]].members]
        for row in fam["top_heads"]:
            layer, head = row["layer"], row["head_index"]
            for metric in hs.metrics:
                assert same(row[metric], float(hs[metric][layer, head]))
        ranked = [str(h) for h, v in hs.ranked(fam["primary_metric"]) if not math.isnan(v)][: summary["top_k"]]
        assert [r["head"] for r in fam["top_heads"]] == ranked
        for name, value in artefacts[fam["name"]].items():
            view = fam["artefacts"][name]
            if isinstance(value, np.ndarray):
                # NaN/inf (e.g. Ships for heads outside a part's block) are stored in JSON as null
                assert view["values"] == np.where(np.isfinite(value), value, None).tolist()
            elif view["kind"] == "table":
                rows = [r for r in value if all(r.get(k) == v for k, v in view.get("filter", {}).items())]
                assert view["rows"] == rows[: len(view["rows"])] and view["n_rows"] == len(value)
            else:
                assert view["value"] == value
    assert n_checked > 0
    # Table cells carry the exact value they display (rounded) in data-value.
    top = summary["families"][0]["top_heads"][0]
    primary = summary["families"][0]["primary_metric"]
    assert f'data-value="{htmllib.escape(repr(top[primary]))}"' in text
