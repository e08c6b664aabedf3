"""Test doubles for the batch path: a multi-part family whose parts can be made slow or
interrupted, a synthetic-run writer, and store snapshots (importable from every test folder)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.analysis.scores import HeadScores
from workbench.families.base import Family, PartResult

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
            "status": fam.status, "summary": fam.summary, "members": fam.members,
            "artefacts": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in arts.items()},
        }
    return out
