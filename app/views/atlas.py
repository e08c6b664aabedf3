"""The head atlas of one run: per family a layer x head heatmap (click a head to open it)."""

from __future__ import annotations

import time
from typing import Any

from dash import dcc

from workbench.app import blocks as B
from workbench.app.data import grid, scalars
from workbench.report import figures as F


def metric_heatmap(family: str, metric: str, values: Any, description: str = "", shared: bool = True) -> Any:
    """The report's metric map: category colours for class codes, a diverging scale for signed
    metrics, and (``shared``) one 0..1 colour scale for every share / rate of the family."""
    return F.metric_heatmap(family, metric, grid(values), shared=shared)


def class_blocks(family: str, rows: list[dict[str, Any]], n_layers: int, n_heads: int) -> list[Any]:
    """Temporal class maps, one per input, in the category colours every figure uses."""
    if not rows or not {"layer", "head"} <= set(rows[0]):
        return []
    column = "class" if "class" in rows[0] else "label" if "label" in rows[0] else None
    if column is None:
        return []
    legend = F.category_legend(sorted({str(r[column]) for r in rows}))
    views = list(dict.fromkeys(str(r.get("input", "")) for r in rows))
    figs = [
        B.Figure(
            F.class_heatmap(
                [r for r in rows if str(r.get("input", "")) == view],
                n_layers,
                n_heads,
                f"{family}: temporal class per head" + (f" ({view})" if view else ""),
                column,
            ),
            f"{family}-classes-{view or 'all'}",
        )
        for view in views
    ]
    return [
        B.Heading("Temporal classes", 3),
        B.Text("colours: " + ", ".join(f"{c['category']} {c['colour']}" for c in legend), muted=True),
        B.Grid(figs),
    ]


def run_header(info: Any) -> list[Any]:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created_at))
    out: list[Any] = [
        B.Text(
            f"model {info.model} · {info.n_layers} layers x {info.n_heads} heads · status {info.status} "
            f"({info.parts_done}/{info.parts_total} parts) · started {when}",
            muted=True,
        )
    ]
    if info.status == "running":
        out.append(
            B.Notice(
                "This run is still being written: finished families are shown, the others appear when "
                "they complete (the page updates by itself).",
                "info",
            )
        )
    elif info.status in ("interrupted", "failed"):
        out.append(
            B.Notice(
                f"This run is {info.status}" + (f" ({info.error})" if info.error else "") + ": finished families are shown.",
                "warn",
                hint=f"resume it with `workbench atlas --resume {info.run_id}`",
            )
        )
    return out


def atlas_blocks(store: Any, run_id: str, every_metric: bool = False) -> list[Any]:
    """``every_metric``: one heatmap per metric (exports); otherwise the primary metric with a picker."""
    from workbench.app.views.findings import findings_blocks

    info = store.run(run_id)
    out = run_header(info)
    out += findings_blocks(store, info.run_id)
    scores = store.scores(info.run_id)
    for fam in store.families(info.run_id):
        inner: list[Any] = []
        if fam.description:
            inner.append(B.Text(fam.description, muted=True))
        hs = scores.get(fam.family)
        if fam.status != "done" or hs is None:
            done = sum(1 for p in fam.parts if p["status"] == "done")
            inner.append(B.Notice(f"In progress: {done}/{len(fam.parts)} parts done.", "info"))
            out.append(B.Section(fam.family, inner, name=f"family-{fam.family}"))
            continue
        metrics = list(hs.metrics)
        chosen = fam.primary_metric if fam.primary_metric in hs.metrics else metrics[0]
        if every_metric:
            inner.append(B.Grid([B.Figure(metric_heatmap(fam.family, m, hs.metrics[m]), f"{fam.family}-{m}") for m in metrics]))
        else:
            inner.append(
                B.Control(
                    dcc.Dropdown(
                        id={"type": "metric-select", "family": fam.family},
                        options=[{"label": m, "value": m} for m in metrics],
                        value=chosen,
                        clearable=False,
                        style={"maxWidth": "360px"},
                    )
                )
            )
            inner.append(
                B.Figure(
                    metric_heatmap(fam.family, chosen, hs.metrics[chosen]),
                    f"{fam.family}",
                    graph_id={"type": "family-graph", "family": fam.family},
                )
            )
            inner.append(B.Text("Click a head to open its detail page.", muted=True))
        if fam.evidence_metric:
            inner.append(
                B.Text(
                    f"Evidence (causal check): {fam.evidence_metric}"
                    + (f" — {hs.descriptions[fam.evidence_metric]}" if fam.evidence_metric in hs.descriptions else ""),
                    muted=True,
                )
            )
        members = ", ".join(f"L{a}H{b}" for a, b in fam.members) or "none"
        inner.append(B.Text(f"Heads this family claims ({len(fam.members)}): {members}", muted=True))
        summary = scalars(fam.summary)
        if summary:
            inner.append(
                B.Table([{"key": k, "value": v} for k, v in summary.items()], ["key", "value"], name=f"summary-{fam.family}")
            )
        drawn = F.causal_figures(fam.family, store.artefacts(info.run_id, fam.family), hs.metrics)
        if drawn:  # the family's causal checks, each with its random / bottom-head control
            inner.append(B.Heading("Causal checks", 4))
            inner += [B.Notice(warning, "warn") for _, _, warning in drawn if warning]
            inner.append(B.Grid([B.Figure(fig, f"causal-{fam.family}-{key}".replace("/", "-")) for key, fig, _ in drawn]))
        out.append(B.Section(fam.family, inner, name=f"family-{fam.family}"))
    if not store.families(info.run_id):
        out.append(B.Notice("This run has no families.", "warn"))
    return out
