"""Differences between two runs (two models, two seeds, two revisions), from the store.

Same head geometry: per family and metric, the difference map (B - A), the largest and mean
absolute difference, Pearson and Spearman correlation over heads and the overlap of the top-k
heads, plus members in one run only. Different geometry (two models): per metric the mean
score by relative depth and the top heads side by side. Always: the families' summary numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from workbench.report import figures as F
from workbench.report.data import collect
from workbench.report.html import Page, esc, kv_table, slug, table, write_outputs
from workbench.store.artefacts import dumps
from workbench.store.store import Store


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0
        i = j + 1
    return ranks


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _as_array(grid: list[list[float | None]]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=np.float64)


def _top(arr: np.ndarray, k: int) -> list[str]:
    flat = [(-(v), layer, h) for (layer, h), v in np.ndenumerate(arr) if math.isfinite(v)]
    return [f"L{layer}H{h}" for _, layer, h in sorted(flat)[:k]]


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def compare_data(store_a: Store, ref_a: str, store_b: Store, ref_b: str, top_k: int = 10) -> dict[str, Any]:
    a, b = collect(store_a, ref_a, top_k), collect(store_b, ref_b, top_k)
    ra, rb = a["run"], b["run"]
    same = (ra["n_layers"], ra["n_heads"]) == (rb["n_layers"], rb["n_heads"])
    fa = {f["name"]: f for f in a["families"] if f["status"] == "done"}
    fb = {f["name"]: f for f in b["families"] if f["status"] == "done"}
    families = []
    for name in [n for n in fa if n in fb]:
        A, B = fa[name], fb[name]
        metrics = []
        for metric in [m for m in A["metrics"] if m in B["metrics"]]:
            ga, gb = _as_array(A["metrics"][metric]), _as_array(B["metrics"][metric])
            entry: dict[str, Any] = {
                "metric": metric,
                "top_a": _top(ga, top_k),
                "top_b": _top(gb, top_k),
                "profile_a": [None if not np.isfinite(r).any() else float(np.nanmean(r)) for r in ga],
                "profile_b": [None if not np.isfinite(r).any() else float(np.nanmean(r)) for r in gb],
            }
            if same:
                both = np.isfinite(ga) & np.isfinite(gb)
                diff = np.where(both, gb - ga, np.nan)
                x, y = ga[both], gb[both]
                overlap = set(entry["top_a"]) & set(entry["top_b"])
                union = set(entry["top_a"]) | set(entry["top_b"])
                entry.update(
                    {
                        "diff": [[None if not math.isfinite(v) else float(v) for v in row] for row in diff],
                        "max_abs_diff": float(np.max(np.abs(x - y))) if x.size else None,
                        "mean_abs_diff": float(np.mean(np.abs(x - y))) if x.size else None,
                        "pearson": _corr(x, y),
                        "spearman": _corr(_ranks(x), _ranks(y)) if x.size else None,
                        "top_k_jaccard": len(overlap) / len(union) if union else None,
                        "identical": bool(np.array_equal(np.isnan(ga), np.isnan(gb)) and np.array_equal(ga[both], gb[both])),
                        "a": A["metrics"][metric],
                        "b": B["metrics"][metric],
                    }
                )
            metrics.append(entry)
        summary = []
        for key in dict.fromkeys([*A["summary"], *B["summary"]]):
            va, vb = _num(A["summary"].get(key)), _num(B["summary"].get(key))
            if va is not None or vb is not None:
                summary.append({"key": key, "a": va, "b": vb, "b_minus_a": None if va is None or vb is None else vb - va})
        members = {}
        if same:
            ma, mb = set(A["members"]), set(B["members"])
            members = {"both": sorted(ma & mb), "only_a": sorted(ma - mb), "only_b": sorted(mb - ma)}
        families.append({"name": name, "metrics": metrics, "summary": summary, "members": members})
    return {
        "a": {**{k: ra[k] for k in ("run_id", "model", "model_hash", "n_layers", "n_heads", "status")}, "config": a["config"]},
        "b": {**{k: rb[k] for k in ("run_id", "model", "model_hash", "n_layers", "n_heads", "status")}, "config": b["config"]},
        "same_geometry": same,
        "families": families,
        "only_in_a": [n for n in fa if n not in fb],
        "only_in_b": [n for n in fb if n not in fa],
        "config_differences": [
            {"key": k, "a": a["config"].get(k), "b": b["config"].get(k)}
            for k in dict.fromkeys([*a["config"], *b["config"]])
            if a["config"].get(k) != b["config"].get(k)
        ],
        "top_k": top_k,
    }


def render_compare(data: dict[str, Any]) -> str:
    a, b = data["a"], data["b"]
    name_a, name_b = f"A: {a['model']}", f"B: {b['model']}"
    page = Page(f"Compare {a['run_id']} vs {b['run_id']}")
    header = (
        f'<header><h1>Compare runs</h1><div class="meta">A = {esc(a["run_id"])} ({esc(a["model"])}, '
        f"{a['n_layers']}x{a['n_heads']}) · B = {esc(b['run_id'])} ({esc(b['model'])}, {b['n_layers']}x{b['n_heads']})"
        "</div></header>"
    )
    ident = page.anchor("overview", "overview")
    rows = []
    for fam in data["families"]:
        for m in fam["metrics"]:
            rows.append(
                {
                    "family": fam["name"],
                    "metric": m["metric"],
                    "max |B-A|": m.get("max_abs_diff"),
                    "mean |B-A|": m.get("mean_abs_diff"),
                    "pearson": m.get("pearson"),
                    "spearman": m.get("spearman"),
                    f"top-{data['top_k']} jaccard": m.get("top_k_jaccard"),
                }
            )
    notes = []
    if not data["same_geometry"]:
        notes.append("The runs have different head geometry: heads are compared by relative depth and by their top lists.")
    if data["only_in_a"] or data["only_in_b"]:
        notes.append(
            f"Families only in A: {', '.join(data['only_in_a']) or 'none'}; only in B: {', '.join(data['only_in_b']) or 'none'}."
        )
    page.add(
        f'<section id="{ident}"><h2>Overview</h2>'
        + "".join(f'<p class="muted">{esc(n)}</p>' for n in notes)
        + table(rows)
        + "<h3>Config differences</h3>"
        + table(data["config_differences"], ["key", "a", "b"])
        + "</section>"
    )
    for fam in data["families"]:
        ident = page.anchor(f"family-{slug(fam['name'])}", fam["name"])
        out = [
            f'<section id="{ident}"><h2>{esc(fam["name"])}</h2>',
            "<h3>Summary</h3>",
            table(fam["summary"], ["key", "a", "b", "b_minus_a"]),
        ]
        if fam["members"]:
            out.append("<h3>Members</h3>" + kv_table({k: ", ".join(v) or "none" for k, v in fam["members"].items()}))
        out.append('<div class="grid">')
        for m in fam["metrics"]:
            metric = m["metric"]
            if "diff" in m:
                out.append(
                    page.figure(
                        F.head_heatmap(m["diff"], f"{fam['name']}: {metric}, B - A", f"Δ {metric}", "RdBu_r", 0.0),
                        f"diff-{fam['name']}-{metric}",
                        "wb-heatmap",
                        family=fam["name"],
                        metric=metric,
                    )
                )
                flat_a = [v for row in m["a"] for v in row]
                flat_b = [v for row in m["b"] for v in row]
                labels = [f"L{layer}H{h}" for layer in range(len(m["a"])) for h in range(len(m["a"][0]))]
                out.append(
                    page.figure(
                        F.scatter_compare(flat_a, flat_b, labels, f"{fam['name']}: {metric}", name_a, name_b),
                        f"scatter-{fam['name']}-{metric}",
                    )
                )
            else:
                out.append(
                    page.figure(
                        F.profile_lines(
                            {name_a: m["profile_a"], name_b: m["profile_b"]},
                            f"{fam['name']}: {metric} by depth",
                            f"mean {metric}",
                        ),
                        f"profile-{fam['name']}-{metric}",
                        "wb-heatmap",
                        family=fam["name"],
                        metric=metric,
                    )
                )
        out.append("</div>")
        tops = [
            {"rank": i + 1, "A": (m["top_a"] + [None] * data["top_k"])[i], "B": (m["top_b"] + [None] * data["top_k"])[i]}
            for m in fam["metrics"][:1]
            for i in range(min(data["top_k"], max(len(m["top_a"]), len(m["top_b"]))))
        ]
        if fam["metrics"]:
            out.append(f"<h3>Top heads by {esc(fam['metrics'][0]['metric'])}</h3>" + table(tops, ["rank", "A", "B"]))
        out.append("</section>")
        page.add("".join(out))
    return page.render(header, data)


def write_compare(
    store_a: Store, ref_a: str, store_b: Store, ref_b: str, out: str | Path | None = None, top_k: int = 10
) -> tuple[Path, Path, dict[str, Any]]:
    data = compare_data(store_a, ref_a, store_b, ref_b, top_k)
    folder = Path(out) if out is not None else store_a.root / "compare" / f"{data['a']['run_id']}__vs__{data['b']['run_id']}"
    if folder.suffix.lower() == ".html":
        html_path, json_path = folder, folder.with_suffix(".json")
    else:
        html_path, json_path = folder / "compare.html", folder / "compare.json"
    write_outputs(json_path, dumps(data, indent=1), html_path, render_compare(data))
    return html_path, json_path, data
