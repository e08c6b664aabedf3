"""Two runs side by side: the difference heatmap (B - A) of one family's metric, and how the
two maps agree (largest and mean absolute difference, correlation, top heads)."""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.app import blocks as B
from workbench.app.data import grid
from workbench.app.views.atlas import metric_heatmap
from workbench.report import figures as F


def choices(store: Any, a: str | None, b: str | None, family: str | None, metric: str | None) -> dict[str, Any]:
    """Fill in what the user has not chosen: the two newest runs, a shared family, its primary metric."""
    runs = store.runs()
    ids = [r.run_id for r in runs]
    a = a if a in ids else (ids[1] if len(ids) > 1 else (ids[0] if ids else None))
    b = b if b in ids else (ids[0] if ids else None)
    families: list[str] = []
    metrics: list[str] = []
    if a and b:
        sa, sb = store.scores(a), store.scores(b)
        families = [f for f in sa if f in sb]
        family = family if family in families else (families[0] if families else None)
        if family:
            metrics = [m for m in sa[family].metrics if m in sb[family].metrics]
            primary = next((f.primary_metric for f in store.families(a) if f.family == family), None)
            metric = metric if metric in metrics else (primary if primary in metrics else (metrics[0] if metrics else None))
    return {
        "runs": runs,
        "a": a,
        "b": b,
        "families": families,
        "family": family if families else None,
        "metrics": metrics,
        "metric": metric if metrics else None,
    }


def _top(values: np.ndarray, k: int = 5) -> str:
    flat = [(-v, layer, h) for (layer, h), v in np.ndenumerate(values) if np.isfinite(v)]
    return ", ".join(f"L{layer}H{h}" for _, layer, h in sorted(flat)[:k]) or "–"


def compare_blocks(store: Any, a: str | None, b: str | None, family: str | None, metric: str | None) -> list[Any]:
    c = choices(store, a, b, family, metric)
    if len(c["runs"]) < 1 or not c["a"] or not c["b"]:
        return [B.Notice("There are no runs to compare yet.", "info", hint="run `workbench atlas` twice (two models or seeds)")]
    ra, rb = store.run(c["a"]), store.run(c["b"])
    out: list[Any] = [
        B.Text(
            f"A = {ra.run_id} ({ra.model}, {ra.n_layers} x {ra.n_heads}) · "
            f"B = {rb.run_id} ({rb.model}, {rb.n_layers} x {rb.n_heads})",
            muted=True,
        )
    ]
    if not c["family"] or not c["metric"]:
        out.append(
            B.Notice(
                "The two runs have no finished family (and metric) in common.",
                "warn",
                hint="pick runs that ran the same families",
            )
        )
        return out
    fam, metric = c["family"], c["metric"]
    va = store.scores(ra.run_id, fam)[fam].metrics[metric]
    vb = store.scores(rb.run_id, fam)[fam].metrics[metric]
    maps = [B.Figure(metric_heatmap(fam, metric, va), "compare-a"), B.Figure(metric_heatmap(fam, metric, vb), "compare-b")]
    maps[0].fig.update_layout(title={"text": f"A: {fam}: {metric}"})
    maps[1].fig.update_layout(title={"text": f"B: {fam}: {metric}"})
    if va.shape != vb.shape:
        out.append(
            B.Notice(
                f"The runs have different head geometry ({va.shape[0]} x {va.shape[1]} vs "
                f"{vb.shape[0]} x {vb.shape[1]}): no difference map; both maps are shown.",
                "info",
            )
        )
        out.append(B.Grid(maps))
        return out
    both = np.isfinite(va) & np.isfinite(vb)
    diff = np.where(both, vb - va, np.nan)
    x, y = va[both], vb[both]
    pearson = float(np.corrcoef(x, y)[0, 1]) if x.size >= 3 and np.std(x) > 0 and np.std(y) > 0 else None
    stats = [
        {
            "family": fam,
            "metric": metric,
            "heads compared": int(both.sum()),
            "max |B-A|": float(np.max(np.abs(y - x))) if x.size else None,
            "mean |B-A|": float(np.mean(np.abs(y - x))) if x.size else None,
            "pearson": pearson,
            "top heads A": _top(va),
            "top heads B": _top(vb),
        }
    ]
    out.append(B.Figure(F.head_heatmap(grid(diff), f"{fam}: {metric}, B − A", f"Δ {metric}", "RdBu_r", 0.0), "compare-diff"))
    out.append(B.Table(stats, name="compare-stats"))
    out.append(B.Grid(maps))
    return out
