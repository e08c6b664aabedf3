"""Head labels for KV-cache compression engines, exported from a run's retrieval family.

DuoAttention, RazorAttention and HeadKV keep the full KV cache for retrieval heads and a short one
(a few sink tokens plus a recent window) for the others. The atlas measures exactly that split
(retrieval scores per KV head, ranked, and a simulated budget curve), so it can hand it to an engine:

* ``duo-attention``: DuoAttention's pattern folder, read by kvpress's `DuoAttentionPress`:
  ``full_attention_heads.tsv`` (one row per layer, one tab-separated column per KV head, a value in
  [0, 1], high = keep the full cache) and ``config.json`` (``sink_size``, ``recent_size``, plus a
  ``workbench`` section naming the run, the metric, the chosen sets and the ``sparsity`` to pass). The
  value is the KV head's score (the max or mean over its query heads, as the run ranked them), moved by
  at most `TIE_STEP` x (number of KV heads) so that consecutive heads of the atlas's ranking are at
  least `TIE_STEP` apart (ten times DuoAttention's uniform(0, 1e-6) tie-breaking noise). Both engines'
  rules then give the atlas's split: with ``sparsity`` = (streaming KV heads) / (all KV heads)
  (`HeadLabels.sparsity`), DuoAttention's ``sparsify_attention_heads(..., sparsity=s)`` (a quantile of
  the noisy values) and kvpress's ``DuoAttentionPress(head_compression_ratio=s)`` (the lowest
  round(N x s) stream) both stream exactly the atlas's streaming set, for every seed of the noise. Any
  other split of the same ranking is read from the same file with its own ``sparsity``.
* ``headkv``: HeadKV's head-score JSON, ``{"layer-head": [score]}`` per query head.
* ``json``: the project's own format (`SCHEMA`): every query head's score, every KV head's reduced score,
  the ranking, the full / streaming split and the window, with the run's identity.

Each format has a reader, so a file can be checked against the run it came from (round trip).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import InputDataError, WorkbenchError
from workbench.interventions.kv_budget import kv_head_scores, rank_kv_heads
from workbench.store.store import Store

FORMATS = ("duo-attention", "headkv", "json")
SCHEMA = "workbench-head-labels/1"
#: DuoAttention's loader adds uniform(0, DUO_NOISE) to every value before its quantile (`sparsify_attention_heads`)
DUO_NOISE = 1e-6
#: least gap between consecutive KV heads of the ranking in the exported pattern: 10x DuoAttention's noise, so
#: the noise never reorders them (n_kv_heads x L of these offsets stay << 1 for any real model)
TIE_STEP = 1e-5
DEFAULT_FULL_FRACTION = 0.25


@dataclass
class HeadLabels:
    """One run's retrieval labels per KV head, and the split at ``full_fraction``."""

    run_id: str
    model: str
    metric: str
    reduce: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_scores: np.ndarray  # [L, H] the metric per query head (NaN where not scored)
    kv_scores: np.ndarray  # [L, KV] reduced over each KV head's query heads
    ranking: list[tuple[int, int]]  # KV heads, best first (the run's own order)
    full_fraction: float
    sink: int
    recent: int

    @property
    def n_full(self) -> int:
        total = self.n_layers * self.n_kv_heads
        return min(total, max(0, round(self.full_fraction * total)))

    @property
    def full_kv_heads(self) -> list[tuple[int, int]]:
        return sorted(self.ranking[: self.n_full])

    @property
    def streaming_kv_heads(self) -> list[tuple[int, int]]:
        return sorted(self.ranking[self.n_full :])

    @property
    def sparsity(self) -> float:
        """The share of KV heads that stream in this split: the value to pass as DuoAttention's
        ``sparsity`` and as kvpress's ``head_compression_ratio`` (both then give exactly this split from
        `pattern`; 1 - ``full_fraction`` differs from it when full_fraction x N is not a whole number)."""
        total = self.n_layers * self.n_kv_heads
        return (total - self.n_full) / total if total else 0.0

    def pattern(self) -> np.ndarray:
        """[L, KV] values in [0, 1], strictly decreasing along the ranking with gaps >= `TIE_STEP`: the
        scores (clipped), scaled by 1 - `TIE_STEP` x N and offset by `TIE_STEP` x (N - rank), so tied
        scores follow the atlas's order; a ranking that disagrees with the scores wins (running minimum)."""
        base = np.clip(np.nan_to_num(self.kv_scores, nan=0.0), 0.0, 1.0)
        out = np.zeros_like(base)
        n = len(self.ranking)
        if n * TIE_STEP >= 0.5:
            raise WorkbenchError(f"{n} KV heads are too many to separate by {TIE_STEP} in [0, 1]", "export with --format json")
        previous = np.inf
        for rank, (layer, kv) in enumerate(self.ranking):  # stays in [TIE_STEP, 1]
            value = min((1.0 - TIE_STEP * n) * base[layer, kv] + TIE_STEP * (n - rank), previous - TIE_STEP)
            out[layer, kv] = previous = value
        return out


def _parse_kv(label: str) -> tuple[int, int]:
    layer, kv = label[1:].split("KV")
    return int(layer), int(kv)


def head_labels(store: Store, run_ref: str, full_fraction: float = DEFAULT_FULL_FRACTION) -> HeadLabels:
    """The labels of a run whose retrieval family finished."""
    if not 0.0 <= full_fraction <= 1.0:
        raise InputDataError(
            f"full fraction {full_fraction} is outside [0, 1]", "give the share of KV heads kept whole, e.g. 0.25"
        )
    info = store.run(run_ref)
    fams = {f.family: f for f in store.families(info.run_id)}
    fam = fams.get("retrieval")
    if fam is None or fam.status != "done":
        raise WorkbenchError(
            f"run {info.run_id} has no finished retrieval family: there are no retrieval labels to export",
            "run the atlas with the retrieval family (workbench atlas MODEL --families retrieval)",
        )
    scores = store.scores(info.run_id, "retrieval")["retrieval"]
    curve = store.artefacts(info.run_id, "retrieval").get("kv_budget_curve") or {}
    metric = str(fam.summary.get("ranking_metric") or "retrieval_score")
    reduce = str(curve.get("kv_reduce") or fam.options.get("kv_reduce") or "max")
    geo = info.geometry or {}
    n_layers, n_heads = int(info.n_layers or 0), int(info.n_heads or 0)
    n_kv = int(geo.get("n_kv_heads") or n_heads)
    values = np.asarray(scores[metric], dtype=np.float64)
    per_kv = kv_head_scores(values, n_kv, reduce)  # the run's own reduction (what its budget curve ranked)
    kv_scores = np.where(np.isfinite(per_kv), per_kv, np.nan)
    ranked = curve.get("kv_heads_ranked")
    ranking = [_parse_kv(x) for x in ranked] if ranked else rank_kv_heads(per_kv)
    return HeadLabels(
        info.run_id,
        info.model,
        metric,
        reduce,
        n_layers,
        n_heads,
        n_kv,
        values,
        kv_scores,
        ranking,
        float(full_fraction),
        int(curve.get("sink", fam.options.get("sink", 4))),
        int(curve.get("recent", fam.options.get("recent", 32))),
    )


# -- writers ------------------------------------------------------------------------------------------


def _identity(labels: HeadLabels) -> dict[str, Any]:
    return {
        "run_id": labels.run_id,
        "model": labels.model,
        "metric": labels.metric,
        "reduce": labels.reduce,
        "full_fraction": labels.full_fraction,
        "sparsity": labels.sparsity,
        "full_kv_heads": [list(x) for x in labels.full_kv_heads],
        "streaming_kv_heads": [list(x) for x in labels.streaming_kv_heads],
        "ranking": [list(x) for x in labels.ranking],
    }


def write_duo_attention(labels: HeadLabels, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    tsv = folder / "full_attention_heads.tsv"
    tsv.write_text("\n".join("\t".join(f"{v:.9f}" for v in row) for row in labels.pattern()) + "\n", encoding="utf-8")
    config = folder / "config.json"
    config.write_text(
        json.dumps({"sink_size": labels.sink, "recent_size": labels.recent, "workbench": _identity(labels)}, indent=2)
    )
    return [tsv, config]


def write_headkv(labels: HeadLabels, path: Path) -> list[Path]:
    out = {
        f"{layer}-{head}": [_finite(labels.head_scores[layer, head])]
        for layer in range(labels.n_layers)
        for head in range(labels.n_heads)
    }
    path.write_text(json.dumps(out, indent=1))
    return [path]


def write_json(labels: HeadLabels, path: Path) -> list[Path]:
    doc = {
        "schema": SCHEMA,
        **_identity(labels),
        "n_layers": labels.n_layers,
        "n_heads": labels.n_heads,
        "n_kv_heads": labels.n_kv_heads,
        "sink": labels.sink,
        "recent": labels.recent,
        "head_scores": [[_finite(v) for v in row] for row in labels.head_scores],
        "kv_scores": [[_finite(v) for v in row] for row in labels.kv_scores],
    }
    path.write_text(json.dumps(doc, indent=1))
    return [path]


def _finite(value: Any) -> float | None:
    v = float(value)
    return v if math.isfinite(v) else None


def export_labels(labels: HeadLabels, fmt: str, out: Path) -> list[Path]:
    """Write ``labels`` as ``fmt`` into ``out`` (a folder for duo-attention, a file for the others)."""
    if fmt == "duo-attention":
        return write_duo_attention(labels, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "headkv":
        return write_headkv(labels, out)
    if fmt == "json":
        return write_json(labels, out)
    raise InputDataError(f"unknown head-label format {fmt!r}", f"use one of {', '.join(FORMATS)}")


# -- readers (round trips, and for anyone consuming the files) ----------------------------------------


def read_duo_attention(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """(pattern [L, KV], config) of a DuoAttention pattern folder."""
    try:
        rows = [line.split("\t") for line in (folder / "full_attention_heads.tsv").read_text().splitlines() if line.strip()]
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputDataError(f"{str(folder)!r} is not a DuoAttention pattern folder: {exc}") from exc
    return np.array([[float(v) for v in row] for row in rows]), config


def read_headkv(path: Path) -> dict[tuple[int, int], float | None]:
    data = json.loads(path.read_text())
    return {(int(k.split("-")[0]), int(k.split("-")[1])): (v[0] if v else None) for k, v in data.items()}


def read_json(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text())
    if doc.get("schema") != SCHEMA:
        raise InputDataError(f"{str(path)!r} is not a {SCHEMA} file (schema {doc.get('schema')!r})")
    return doc


def streaming_set_at(pattern: np.ndarray, ratio: float) -> list[tuple[int, int]]:
    """The KV heads an engine streams when it streams the lowest round(size x ratio) values of the pattern
    (kvpress's DuoAttentionPress rule), so a file can be checked against the atlas's own split."""
    flat = [(pattern[layer, kv], (layer, kv)) for layer in range(pattern.shape[0]) for kv in range(pattern.shape[1])]
    n = round(len(flat) * ratio)
    return sorted(cell for _, cell in sorted(flat)[:n])
