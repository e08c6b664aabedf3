"""Everything a report shows, read from the store in one place.

`collect` returns a JSON-able dict (written as ``report.json`` and embedded in the HTML): the
run, its config and versions, and per family the summary, members, every metric as a
[layer][head] list (null = NaN), the top heads with their evidence, and the artefacts. The
HTML is drawn from this dict only, so the report's numbers are the store's numbers.

A missing or unreadable artefact file does not stop the report: it is left out, listed under the
family's ``damaged`` and the report's ``damaged`` (path and reason), and named in the findings'
warnings, so everything else is still shown.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from workbench.store.artefacts import to_jsonable, tolerant
from workbench.store.store import Store

MAX_TABLE_ROWS = 200
REPORT_FORMAT = 1


def _grid(values: np.ndarray) -> list[list[float | None]]:
    return [[None if not math.isfinite(float(v)) else float(v) for v in row] for row in values]


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def top_heads(scores: Any, primary: str | None, evidence: str | None, k: int) -> list[dict[str, Any]]:
    if primary is None or primary not in scores.metrics:
        return []
    out = []
    for rank, (head, value) in enumerate(scores.ranked(primary)[:k], start=1):
        if not math.isfinite(value):
            break
        row = {"rank": rank, "head": str(head), "layer": head.layer, "head_index": head.head, primary: value}
        if evidence and evidence in scores.metrics:
            row[evidence] = to_jsonable(scores.score(evidence, head))
        for metric in scores.metrics:
            if metric not in row:
                row[metric] = to_jsonable(scores.score(metric, head))
        out.append(row)
    return out


# Tables the report draws whole (per-head maps), and tables it shows filtered.
WHOLE_TABLES = ("temporal_classes",)
TABLE_FILTERS: dict[str, tuple[str, str]] = {"sink_tokens": ("kind", "hidden")}


def _artefact_view(name: str, value: Any) -> dict[str, Any]:
    """What the report keeps of an artefact: small arrays whole, tables up to MAX_TABLE_ROWS rows."""
    if isinstance(value, np.ndarray):
        view: dict[str, Any] = {"kind": "array", "dtype": str(value.dtype), "shape": list(value.shape)}
        if value.size <= 4096:
            view["values"] = to_jsonable(value)
        return view
    if isinstance(value, list) and all(isinstance(r, dict) for r in value):
        rows = value
        view = {"kind": "table", "n_rows": len(value)}
        if name in TABLE_FILTERS:
            key, wanted = TABLE_FILTERS[name]
            rows = [r for r in value if r.get(key) == wanted]
            view["filter"] = {key: wanted}
        limit = None if name in WHOLE_TABLES else MAX_TABLE_ROWS
        view["rows"] = to_jsonable(rows[:limit])
        view["truncated"] = limit is not None and len(rows) > limit
        return view
    return {"kind": "json", "value": to_jsonable(value)}


def collect(store: Store, run_ref: str, top_k: int = 10) -> dict[str, Any]:
    reader: Any = tolerant(store)  # damaged artefacts are listed, not raised
    info = reader.run(run_ref)
    fams = reader.families(info.run_id)
    scores = reader.scores(info.run_id)
    families: list[dict[str, Any]] = []
    for fam in fams:
        hs = scores.get(fam.family)
        entry: dict[str, Any] = {
            "name": fam.family,
            "status": fam.status,
            "description": fam.description,
            "primary_metric": fam.primary_metric,
            "evidence_metric": fam.evidence_metric,
            "options": fam.options,
            "summary": to_jsonable(fam.summary),
            "members": [head_label(*m) for m in fam.members],
            "parts": fam.parts,
            "metrics": {},
            "descriptions": {},
            "top_heads": [],
            "artefacts": {},
            "damaged": [],
        }
        if hs is not None:
            entry["metrics"] = {m: _grid(v) for m, v in hs.metrics.items()}
            entry["descriptions"] = dict(hs.descriptions)
            entry["top_heads"] = top_heads(hs, fam.primary_metric, fam.evidence_metric, top_k)
        if fam.status == "done":
            loaded = reader.artefacts(info.run_id, fam.family)
            entry["artefacts"] = {name: _artefact_view(name, v) for name, v in loaded.items()}
            entry["damaged"] = [d.to_dict() for d in loaded.damaged]
        families.append(entry)
    from workbench.report.findings import build_findings

    found = build_findings(reader, info.run_id)
    damaged = [d.to_dict() for d in reader.damaged]
    findings = {**found.to_dict(), "rows": found.rows()}
    if damaged:  # the findings were read without these files: say so where the verdicts are
        findings["warnings"] = [d["note"] for d in damaged] + list(findings.get("warnings", []))
    return {
        "format": REPORT_FORMAT,
        "damaged": damaged,
        "findings": findings,
        "run": {k: v for k, v in info.to_dict().items() if k not in ("config", "versions")},
        "config": info.config,
        "versions": info.versions,
        "families": families,
        "cross_family": cross_family(families, info.n_layers or 0, info.n_heads or 0),
        "top_k": top_k,
    }


def cross_family(families: list[dict[str, Any]], n_layers: int, n_heads: int) -> dict[str, Any]:
    """Heads claimed by (members of) more than one family, and heads in more than one family's
    top list (the top 10% of heads by each family's primary metric, at most the report's top-k)."""
    k = max(1, min(len(families[0]["top_heads"]) if families else 0, round(0.1 * n_layers * n_heads)))
    claimed: dict[str, list[str]] = {}
    in_top: dict[str, list[str]] = {}
    for fam in families:
        for head in fam["members"]:
            claimed.setdefault(head, []).append(fam["name"])
        for row in fam["top_heads"][:k]:
            in_top.setdefault(row["head"], []).append(fam["name"])
    counts = [[len(claimed.get(head_label(layer, h), [])) for h in range(n_heads)] for layer in range(n_layers)]
    top_counts = [[len(in_top.get(head_label(layer, h), [])) for h in range(n_heads)] for layer in range(n_layers)]
    heads = sorted(set(claimed) | set(in_top), key=lambda s: tuple(int(x) for x in s[1:].split("H")))
    shared = [
        {"head": h, "claimed_by": claimed.get(h, []), "top_k_of": in_top.get(h, [])}
        for h in heads
        if len(claimed.get(h, [])) > 1 or len(in_top.get(h, [])) > 1
    ]
    return {
        "families": [f["name"] for f in families if f["status"] == "done"],
        "claimed_counts": counts,
        "top_k_counts": top_counts,
        "shared_heads": shared,
        "top_k": k,
    }
