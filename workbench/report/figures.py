"""Plotly figure builders: pure functions from plain data (lists, dicts) to `go.Figure`.

Used by the HTML report and the compare report, and reused by the dashboard. Values are
passed as Python lists with None for NaN, so the figure JSON carries exactly the store's numbers.

Colours live in one place: `CATEGORY_COLOURS` (a category -> colour map used by every
categorical figure, report and dashboard alike, so a class has the same colour in every panel)
and `ROLE_COLOURS` (the bars and lines of causal figures: baseline, ranked heads, random control).
Heads are labelled "L2H3" everywhere.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}

# -- colours (one place) -----------------------------------------------------------------------------

#: One colour per category, in every figure of the report and the dashboard.
CATEGORY_COLOURS: dict[str, str] = {
    # temporal pattern classes (workbench.analysis.temporal.CLASSES)
    "re-access": "#4c78a8",
    "sequential": "#54a24b",
    "seasonal": "#b279a2",
    "unpredictable": "#bab0ac",
    # safety judge verdicts
    "refusal": "#4c78a8",
    "compliance": "#e45756",
}
#: The order categorical legends list the known categories in (others follow, sorted).
CATEGORY_ORDER = ("re-access", "sequential", "seasonal", "unpredictable")
#: Colours for categories not listed above: picked by a stable hash of the name (the same in every run).
_EXTRA_COLOURS = ("#f58518", "#72b7b2", "#eeca3b", "#ff9da6", "#9d755d", "#e45756", "#54a24b", "#b279a2")

#: What each bar or line of a causal figure stands for.
ROLE_COLOURS: dict[str, str] = {
    "base": "#6b7280",  # no intervention / full cache
    "ranked": "#4c78a8",  # the heads the atlas ranks highest
    "random": "#f58518",  # the random-head control
    "group": "#b279a2",  # a searched group of heads (Sahara)
    "before": "#9ca3af",
    "after": "#4c78a8",
    "worse": "#dc2626",
}

#: Metrics whose values are category codes (index into the tuple), drawn with the category colours.
CATEGORICAL_METRICS: dict[str, tuple[str, ...]] = {"label_code": CATEGORY_ORDER, "pattern_label": CATEGORY_ORDER}

#: Metric names that are shares, rates or probabilities: with values in [0, 1] they share one 0..1 scale.
_UNIT_WORDS = ("share", "score", "mass", "rate", "accuracy", "confidence", "fraction", "prob", "asr")


def category_colour(name: str) -> str:
    """The colour of a category: fixed for the known ones, a stable pick for others."""
    key = str(name)
    if key in CATEGORY_COLOURS:
        return CATEGORY_COLOURS[key]
    return _EXTRA_COLOURS[zlib.crc32(key.encode()) % len(_EXTRA_COLOURS)]


def head_name(head: Any) -> str:
    """ "L2H3" for a head given as "L2H3", (2, 3), [2, 3] or {"layer": 2, "head": 3}."""
    if isinstance(head, str):
        return head
    if isinstance(head, Mapping) and "layer" in head and "head" in head:
        return f"L{int(head['layer'])}H{int(head['head'])}"
    if isinstance(head, (list, tuple)) and len(head) == 2 and all(isinstance(x, int) for x in head):
        return f"L{head[0]}H{head[1]}"
    return str(head)


def head_names(heads: Any) -> list[str]:
    return [head_name(h) for h in heads or []]


def _short(names: Sequence[str], k: int = 6) -> str:
    names = list(names)
    return ", ".join(names[:k]) + (f" … (+{len(names) - k})" if len(names) > k else "") if names else "none"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


# -- layout ------------------------------------------------------------------------------------------

#: Room above the plot: the modebar (plotly's toolbar, top right) sits in the first ~28 px and the
#: title just below it, so the two never overlap however long the title is.
TOP_MARGIN = 72


def _axis(spec: dict[str, Any] | None) -> dict[str, Any]:
    return {"automargin": True, **(spec or {})}


def apply_layout(fig: go.Figure, title: str, height: int, **extra: Any) -> go.Figure:
    """The house layout of every figure (report and dashboard): no theme, the title left-aligned
    below the modebar, axes that grow their margins to fit their tick labels."""
    base: dict[str, Any] = {"margin": {"l": 60, "r": 20, "t": TOP_MARGIN, "b": 50}, "plot_bgcolor": "white"}
    settings = {**base, **extra}
    settings["margin"] = {**base["margin"], **settings["margin"], "t": max(TOP_MARGIN, settings["margin"].get("t", 0))}
    for axis in ("xaxis", "yaxis"):
        settings[axis] = _axis(settings.get(axis))
    fig.update_layout(
        template=None,
        title={
            "text": title,
            "font": {"size": 14},
            "x": 0.01,
            "xanchor": "left",
            "xref": "container",
            "yref": "container",
            "y": 1.0,
            "yanchor": "top",
            "pad": {"t": 32, "l": 4},
        },
        height=height,
        font=_FONT,
        paper_bgcolor="white",
        modebar={"orientation": "h", "bgcolor": "rgba(255,255,255,0.6)"},
        **settings,
    )
    return fig


_layout = apply_layout


# -- layer x head maps --------------------------------------------------------------------------------


def _finite(values: Sequence[Sequence[float | None]]) -> list[float]:
    return [float(v) for row in values for v in row if v is not None and math.isfinite(float(v))]


def is_unit_metric(metric: str, values: Sequence[Sequence[float | None]]) -> bool:
    """A share, rate or probability (by name) whose values all lie in [0, 1]: such metrics of a
    family are drawn on one shared 0..1 scale, so 0.03 looks small next to 1.0."""
    name = metric.lower()
    if "delta" in name or "drop" in name or "gain" in name or not any(w in name for w in _UNIT_WORDS):
        return False
    finite = _finite(values)
    return bool(finite) and min(finite) >= 0.0 and max(finite) <= 1.0


def shared_scale(metrics: Mapping[str, Sequence[Sequence[float | None]]]) -> dict[str, tuple[float, float]]:
    """Per metric of a family, the colour range it shares with the family's other metrics of the
    same unit: (0, 1) for every share / rate / probability in [0, 1]; others are not listed (own scale)."""
    return {m: (0.0, 1.0) for m, v in metrics.items() if is_unit_metric(m, v)}


def _constant_colorbar(value: float, zmid: float | None, bar: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
    """A colour range around a constant map's value, with a single tick saying it is constant."""
    if zmid is not None:
        r = abs(value - zmid) * 1.25 if value != zmid else 0.5
        lo, hi = zmid - r, zmid + r
    elif 0.0 <= value <= 1.0:
        lo, hi = 0.0, 1.0
    else:
        r = max(abs(value) * 0.1, 0.5)
        lo, hi = value - r, value + r
    tick = f"{value:.4g}"
    bar = {**bar, "tickmode": "array", "tickvals": [value], "ticktext": [f"constant = {tick}"]}
    return lo, hi, bar


def head_heatmap(
    values: Sequence[Sequence[float | None]],
    title: str,
    metric: str,
    colorscale: str = "Viridis",
    zmid: float | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """A layer x head heatmap (layer 0 at the top); None cells are left blank.

    ``zmin``/``zmax`` fix the colour range (a scale shared across a family's maps, see
    `shared_scale`); by default each map scales on its own. A constant map gets a colour range
    around its value and a colour bar that says "constant = v" (never a meaningless -0.5..0.5).
    """
    n_layers = len(values)
    n_heads = len(values[0]) if n_layers else 0
    if metric in CATEGORICAL_METRICS and not (zmin is not None or zmid is not None):
        return _code_heatmap(values, title, metric, CATEGORICAL_METRICS[metric])
    text = [[f"L{layer}H{h}" for h in range(n_heads)] for layer in range(n_layers)]
    finite = _finite(values)
    bar: dict[str, Any] = {"title": {"text": metric, "side": "right"}}
    note = ""
    if finite and min(finite) == max(finite) and zmin is None and zmax is None:
        zmin, zmax, bar = _constant_colorbar(finite[0], zmid, bar)
        zmid = None
        note = f" (constant = {finite[0]:.4g})"
    elif not finite:
        note = " (no values)"
    elif zmin is not None and zmax is not None:
        zmid = None
    fig = go.Figure(
        go.Heatmap(
            z=[list(row) for row in values],
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            text=text,
            colorscale=colorscale,
            zmid=zmid,
            zmin=zmin,
            zmax=zmax,
            colorbar=bar,
            hovertemplate="%{text}<br>" + metric + " = %{z:.4g}<extra></extra>",
            hoverongaps=False,
        )
    )
    height = max(280, min(920, 80 + 22 * n_layers))
    return _layout(
        fig,
        title + note,
        height,
        plot_bgcolor="#eeeeee",
        xaxis={"title": {"text": "head"}, "dtick": 1 if n_heads <= 32 else None, "showgrid": False, "zeroline": False},
        yaxis={
            "title": {"text": "layer"},
            "autorange": "reversed",
            "dtick": 1 if n_layers <= 40 else None,
            "showgrid": False,
            "zeroline": False,
        },
    )


def metric_heatmap(
    family: str,
    metric: str,
    values: Sequence[Sequence[float | None]],
    scale: tuple[float, float] | None = None,
    shared: bool = False,
) -> go.Figure:
    """A family's metric map in its house style: categorical codes with the category colours,
    signed metrics (deltas, drops, gains) on a diverging scale centred on 0, others on Viridis.
    ``scale`` fixes the colour range; ``shared=True`` takes it from `shared_scale` (0..1 for shares
    and rates), so the family's maps of one unit compare by colour."""
    if scale is None and shared:
        scale = shared_scale({metric: values}).get(metric)
    signed = any(w in metric for w in ("delta", "drop", "gain"))
    title = f"{family}: {metric}" + (" · colour scale 0–1 (shared)" if scale == (0.0, 1.0) else "")
    return head_heatmap(
        values,
        title,
        metric,
        colorscale="RdBu_r" if signed else "Viridis",
        zmid=0.0 if signed and scale is None else None,
        zmin=None if scale is None else scale[0],
        zmax=None if scale is None else scale[1],
    )


def _category_scale(classes: Sequence[str]) -> list[list[Any]]:
    """A stepped colour scale: code i (of len(classes)) gets the colour of classes[i]."""
    n = max(1, len(classes))
    scale: list[list[Any]] = []
    for i, c in enumerate(classes or ["?"]):
        colour = category_colour(c)
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    return scale


def _category_map(
    z: list[list[float | None]], text: list[list[str]], classes: Sequence[str], title: str, n_layers: int, n_heads: int
) -> go.Figure:
    n = max(1, len(classes))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            text=text,
            colorscale=_category_scale(classes),
            zmin=-0.5,
            zmax=n - 0.5,
            hovertemplate="%{text}<extra></extra>",
            colorbar={"tickvals": list(range(n)), "ticktext": list(classes), "title": {"text": "class"}},
            hoverongaps=False,
        )
    )
    return _layout(
        fig,
        title,
        max(280, min(920, 80 + 22 * n_layers)),
        xaxis={"title": {"text": "head"}, "dtick": 1 if n_heads <= 32 else None, "showgrid": False},
        yaxis={"title": {"text": "layer"}, "autorange": "reversed", "dtick": 1 if n_layers <= 40 else None, "showgrid": False},
    )


def _code_heatmap(values: Sequence[Sequence[float | None]], title: str, metric: str, classes: Sequence[str]) -> go.Figure:
    """A metric of category codes (e.g. ``pattern_label``): the codes unchanged, the category colours."""
    n_layers = len(values)
    n_heads = len(values[0]) if n_layers else 0
    text = [
        [
            f"L{layer}H{h}"
            + (f": {classes[int(v)]}" if v is not None and math.isfinite(float(v)) and 0 <= int(v) < len(classes) else "")
            for h, v in enumerate(row)
        ]
        for layer, row in enumerate(values)
    ]
    return _category_map([list(r) for r in values], text, classes, title, n_layers, n_heads)


def class_heatmap(rows: Sequence[dict[str, Any]], n_layers: int, n_heads: int, title: str, column: str = "class") -> go.Figure:
    """Categorical layer x head map (e.g. temporal classes). The classes present are coded
    0..n-1 alphabetically; each is drawn in its `category_colour`, the same in every panel."""
    classes = sorted({str(r[column]) for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    z: list[list[float | None]] = [[None] * n_heads for _ in range(n_layers)]
    text = [[f"L{layer}H{h}" for h in range(n_heads)] for layer in range(n_layers)]
    for r in rows:
        z[int(r["layer"])][int(r["head"])] = index[str(r[column])]
        text[int(r["layer"])][int(r["head"])] += f": {r[column]}"
    return _category_map(z, text, classes, title, n_layers, n_heads)


def category_legend(classes: Sequence[str]) -> list[dict[str, str]]:
    """The legend of categorical figures: (category, colour) in the order legends list them."""
    known = [c for c in CATEGORY_ORDER if c in classes]
    rest = sorted(c for c in classes if c not in CATEGORY_ORDER)
    return [{"category": c, "colour": category_colour(c)} for c in [*known, *rest]]


def layer_bar(values: Sequence[float | None], title: str, ylabel: str) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=list(range(len(values))),
            y=list(values),
            marker_color="#4c78a8",
            hovertemplate="layer %{x}: %{y:.4g}<extra></extra>",
        )
    )
    return _layout(
        fig, title, 320, xaxis={"title": {"text": "layer"}, "dtick": 1}, yaxis={"title": {"text": ylabel}, "rangemode": "tozero"}
    )


def token_bar(rows: Sequence[dict[str, Any]], title: str, k: int = 20) -> go.Figure:
    """The tokens that are sinks most often (``token_sink_frequency`` rows)."""
    top = list(rows)[:k]
    fig = go.Figure(
        go.Bar(
            x=[r["times_sink"] for r in top][::-1],
            y=[repr(r["token"]) for r in top][::-1],
            orientation="h",
            customdata=[[r["times_seen"], r["rate"]] for r in top][::-1],
            marker_color="#f58518",
            hovertemplate="%{y}: sink %{x} of %{customdata[0]} times (rate %{customdata[1]:.3f})<extra></extra>",
        )
    )
    return _layout(
        fig,
        title,
        max(280, 70 + 22 * len(top)),
        xaxis={"title": {"text": "times a sink (prompt x position)"}},
        margin={"l": 140, "r": 20, "t": TOP_MARGIN, "b": 50},
    )


def count_heatmap(counts: Sequence[Sequence[int]], title: str, hover: Sequence[Sequence[str]] | None = None) -> go.Figure:
    """Layer x head count map (how many families claim each head)."""
    n_layers = len(counts)
    n_heads = len(counts[0]) if n_layers else 0
    text = hover or [[f"L{layer}H{h}" for h in range(n_heads)] for layer in range(n_layers)]
    top = max([max(row) for row in counts] + [1])
    fig = go.Figure(
        go.Heatmap(
            z=[list(r) for r in counts],
            text=[list(r) for r in text],
            colorscale="Blues",
            zmin=0,
            zmax=top,
            hovertemplate="%{text}: %{z} families<extra></extra>",
            colorbar={"title": {"text": "families"}, "dtick": 1},
        )
    )
    return _layout(
        fig,
        title,
        max(260, min(900, 60 + 22 * n_layers)),
        xaxis={"title": {"text": "head"}, "dtick": 1 if n_heads <= 32 else None, "showgrid": False},
        yaxis={"title": {"text": "layer"}, "autorange": "reversed", "dtick": 1 if n_layers <= 40 else None, "showgrid": False},
    )


def scatter_compare(
    a: Sequence[float | None], b: Sequence[float | None], labels: Sequence[str], title: str, name_a: str, name_b: str
) -> go.Figure:
    """One point per head: the same metric in run A against run B."""
    fig = go.Figure(
        go.Scatter(
            x=list(a),
            y=list(b),
            mode="markers",
            text=list(labels),
            marker={"size": 6, "color": "#4c78a8"},
            hovertemplate="%{text}: %{x:.4g} vs %{y:.4g}<extra></extra>",
        )
    )
    return _layout(fig, title, 360, xaxis={"title": {"text": name_a}}, yaxis={"title": {"text": name_b}})


def profile_lines(profiles: dict[str, Sequence[float | None]], title: str, ylabel: str) -> go.Figure:
    """Mean score per relative depth (0 = first layer, 1 = last), one line per run."""
    fig = go.Figure()
    for name, values in profiles.items():
        n = len(values)
        x = [i / (n - 1) if n > 1 else 0.0 for i in range(n)]
        fig.add_trace(go.Scatter(x=x, y=list(values), mode="lines+markers", name=name))
    return _layout(fig, title, 320, xaxis={"title": {"text": "relative depth"}}, yaxis={"title": {"text": ylabel}})


# -- causal results -------------------------------------------------------------------------------------


def _bar_text(values: Sequence[float | None]) -> list[str]:
    return ["–" if v is None else f"{v:.3g}" for v in values]


def kv_budget_figure(curve: Mapping[str, Any], title: str) -> go.Figure:
    """The KV-budget curve (`kv_budget_curve` of the retrieval family): needle accuracy when the
    top-ranked KV heads keep the full cache, against the same number of random KV heads (the
    control), and the full cache as the ceiling. x: the share of the KV cache kept."""
    fractions = [_num(v) for v in curve.get("fractions") or []]
    share = [_num(v) for v in curve.get("cache_share") or []]
    use_share = len(share) == len(fractions) and all(v is not None for v in share) and bool(share)
    x = share if use_share else fractions
    ranked = [_num(v) for v in curve.get("ranked_accuracy") or []]
    random_ = [_num(v) for v in curve.get("random_accuracy") or []]
    custom = [f if f is not None else float("nan") for f in fractions]
    hover = "cache kept %{x:.3f} (heads with full cache %{customdata:.0%})<br>accuracy %{y:.3g}<extra>%{fullData.name}</extra>"
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=ranked,
            mode="lines+markers",
            name="ranked KV heads keep full cache",
            line={"color": ROLE_COLOURS["ranked"], "width": 2.5},
            customdata=custom,
            hovertemplate=hover,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=random_,
            mode="lines+markers",
            name="random KV heads (control)",
            line={"color": ROLE_COLOURS["random"], "dash": "dash", "width": 2},
            marker={"symbol": "x"},
            customdata=custom,
            hovertemplate=hover,
        )
    )
    full = _num(curve.get("full_accuracy"))
    if full is not None and x:
        finite_x = [v for v in x if v is not None]
        lo, hi = (min(finite_x), max(finite_x)) if finite_x else (0.0, 1.0)
        fig.add_trace(
            go.Scatter(
                x=[lo, hi],
                y=[full, full],
                mode="lines",
                name=f"full cache ({full:.3g})",
                line={"color": ROLE_COLOURS["base"], "dash": "dot"},
                hovertemplate="full cache: accuracy %{y:.3g}<extra></extra>",
            )
        )
    sink, recent = curve.get("sink"), curve.get("recent")
    note = f"others keep {sink} sink + {recent} recent tokens" if sink is not None and recent is not None else ""
    return _layout(
        fig,
        title + (f"<br><sup>{note}</sup>" if note else ""),
        400,
        xaxis={"title": {"text": "share of the KV cache kept" if use_share else "fraction of KV heads with the full cache"}},
        yaxis={"title": {"text": "needle accuracy"}, "rangemode": "tozero"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0},
        margin={"b": 100},
    )


def act_worse(act: Mapping[str, Any]) -> bool:
    """Whether ACT made the held-out score worse (the metric is higher-is-better)."""
    before, after = _num(act.get("evaluation_before")), _num(act.get("evaluation_after"))
    return before is not None and after is not None and after < before


def act_figure(act: Mapping[str, Any], title: str) -> go.Figure:
    """ACT calibration (`act_calibration` of the sinks family): the metric before and after
    calibrating the selected heads, on the calibration set and on the held-out set. A held-out
    score that got worse is flagged in red in the figure."""
    metric = str(act.get("metric") or "score")
    sets = ["calibration set", "held-out set"]
    before = [_num(act.get("calibration_before")), _num(act.get("evaluation_before"))]
    after = [_num(act.get("calibration_after")), _num(act.get("evaluation_after"))]
    heads = head_names(act.get("selected"))
    worse = act_worse(act)
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=sets,
            y=before,
            name="before ACT",
            marker_color=ROLE_COLOURS["before"],
            text=_bar_text(before),
            textposition="outside",
            hovertemplate="%{x} before ACT: %{y:.6g}<extra></extra>",
        )
    )
    after_colours = [ROLE_COLOURS["after"], ROLE_COLOURS["worse"] if worse else ROLE_COLOURS["after"]]
    fig.add_trace(
        go.Bar(
            x=sets,
            y=after,
            name=f"after ACT on {_short(heads)}",
            marker_color=after_colours,
            text=_bar_text(after),
            textposition="outside",
            hovertemplate="%{x} after ACT: %{y:.6g}<extra></extra>",
        )
    )
    if worse:
        delta = (after[1] or 0.0) - (before[1] or 0.0)
        fig.add_annotation(
            text=f"⚠ held-out score got worse ({delta:+.3g})",
            xref="paper",
            yref="paper",
            x=1.0,
            y=1.0,
            xanchor="right",
            yanchor="bottom",
            showarrow=False,
            font={"color": ROLE_COLOURS["worse"], "size": 13},
        )
    held = f" · held-out {before[1]:.4g} → {after[1]:.4g}" if before[1] is not None and after[1] is not None else ""
    sub = f"heads calibrated: {_short(heads)}{held}" + (" · WORSE on held-out data" if worse else "")
    return _layout(
        fig,
        title + f"<br><sup>{sub}</sup>",
        360,
        barmode="group",
        yaxis={"title": {"text": metric}},
        legend={"orientation": "h", "y": -0.2, "x": 0},
        margin={"b": 80},
    )


def ablation_figure(comparison: Mapping[str, Any], title: str) -> go.Figure:
    """Top-k vs random ablation (`ablation_comparison` of the retrieval family): accuracy with no
    ablation, with the top-k heads ablated, and with each random set of k heads (the control)."""
    k = comparison.get("k")
    mode = comparison.get("mode")
    top = head_names(comparison.get("top_heads"))
    rand_sets = [head_names(s) for s in comparison.get("random_heads") or []]
    rand_acc = [_num(v) for v in comparison.get("random_accuracies") or []]
    labels = ["no ablation", f"top-{k} heads"] + [f"random set {i + 1}" for i in range(len(rand_acc))]
    values = [_num(comparison.get("base_accuracy")), _num(comparison.get("top_accuracy")), *rand_acc]
    colours = [ROLE_COLOURS["base"], ROLE_COLOURS["ranked"]] + [ROLE_COLOURS["random"]] * len(rand_acc)
    heads = ["none", _short(top, 12)] + [_short(s, 12) for s in rand_sets] + [""] * (len(rand_acc) - len(rand_sets))
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=labels[:2],
            y=values[:2],
            marker_color=colours[:2],
            customdata=heads[:2],
            text=_bar_text(values[:2]),
            textposition="outside",
            name="base and ranked heads",
            hovertemplate="%{x}: %{y:.3g}<br>heads: %{customdata}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Bar(
            x=labels[2:],
            y=values[2:],
            marker_color=colours[2:],
            customdata=heads[2:],
            text=_bar_text(values[2:]),
            textposition="outside",
            name=f"random {k} heads (control)",
            hovertemplate="%{x}: %{y:.3g}<br>heads: %{customdata}<extra>control</extra>",
        )
    )
    finite = [v for v in rand_acc if v is not None]
    if finite:
        mean = sum(finite) / len(finite)
        fig.add_hline(
            y=mean,
            line={"color": ROLE_COLOURS["random"], "dash": "dash", "width": 1},
            annotation_text=f"random mean {mean:.3g}",
            annotation_position="top right",
        )
    metric = comparison.get("metric")
    sub = f"top-{k} by {metric}: {_short(top)}" + (f" · ablation: {mode}" if mode else "")
    return _layout(
        fig,
        title + f"<br><sup>{sub}</sup>",
        360,
        barmode="overlay",
        showlegend=True,
        yaxis={"title": {"text": "needle accuracy"}, "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.2, "x": 0},
        margin={"b": 80},
    )


def head_value_bars(
    values: Sequence[Sequence[float | None]], title: str, ylabel: str, k: int = 20, signed: bool = True
) -> go.Figure:
    """One bar per head that has a value (e.g. ``ablation_accuracy_drop``, measured for the top
    heads only), largest first, labelled "L2H7"."""
    cells = [(float(v), f"L{layer}H{h}") for layer, row in enumerate(values) for h, v in enumerate(row) if v is not None]
    cells = [c for c in cells if math.isfinite(c[0])]
    cells.sort(key=lambda c: -c[0])
    cells = cells[:k]
    ys = [c[0] for c in cells]
    colours = [ROLE_COLOURS["ranked"] if (y >= 0 or not signed) else ROLE_COLOURS["worse"] for y in ys]
    fig = go.Figure(
        go.Bar(
            x=[c[1] for c in cells],
            y=ys,
            marker_color=colours,
            text=_bar_text(ys),
            textposition="outside",
            hovertemplate="%{x}: %{y:.4g}<extra></extra>",
        )
    )
    return _layout(
        fig,
        title + ("" if cells else " (no head measured)"),
        320,
        xaxis={"title": {"text": "head"}, "type": "category", "tickangle": -45 if len(cells) > 12 else 0},
        yaxis={"title": {"text": ylabel}},
    )


def asr_figure(asr: Mapping[str, Any], title: str) -> go.Figure:
    """Attack success rate (`asr` of the safety family): no ablation, the top Ships head of each
    query ablated, a random head per query ablated (the control), and the Sahara group ablated."""
    group = head_names(asr.get("sahara_heads"))
    rows = [
        ("no ablation", asr.get("base"), ROLE_COLOURS["base"], "none"),
        ("top Ships head per query", asr.get("top_ships_per_query"), ROLE_COLOURS["ranked"], "one head per query"),
        ("random head per query (control)", asr.get("random_head_per_query"), ROLE_COLOURS["random"], "one head per query"),
        ("Sahara group", asr.get("sahara_group"), ROLE_COLOURS["group"], _short(group, 12)),
    ]
    ys = [_num(r[1]) for r in rows]
    fig = go.Figure()
    for (label, _, colour, heads), y in zip(rows, ys):
        fig.add_trace(
            go.Bar(
                x=[label],
                y=[y],
                name=label,
                marker_color=colour,
                customdata=[heads],
                text=_bar_text([y]),
                textposition="outside",
                hovertemplate="%{x}: ASR %{y:.3g}<br>heads: %{customdata}<extra></extra>",
            )
        )
    extra = []
    if _num(asr.get("base_refusal_harmful")) is not None:
        extra.append(f"refusal on harmful prompts {float(asr['base_refusal_harmful']):.3g}")
    if _num(asr.get("refusal_benign")) is not None:
        extra.append(f"on benign {float(asr['refusal_benign']):.3g}")
    sub = f"Sahara group: {_short(group)}" + (" · " + ", ".join(extra) if extra else "")
    return _layout(
        fig,
        title + f"<br><sup>{sub}</sup>",
        360,
        showlegend=False,
        yaxis={"title": {"text": "attack success rate"}, "range": [0, 1.1]},
        xaxis={"type": "category"},
    )


def removal_figure(check: Mapping[str, Any], title: str) -> go.Figure:
    """A top-vs-bottom removal check (the sinks family's ``removal_check``): the metric change when
    the top-ranked heads are removed, against the bottom-ranked heads (the control)."""
    top, bottom = head_names(check.get("top_heads")), head_names(check.get("bottom_heads"))
    ys = [_num(check.get("top_delta")), _num(check.get("bottom_delta"))]
    labels = ["top-ranked heads", "bottom-ranked heads (control)"]
    fig = go.Figure()
    for label, y, colour, heads in zip(labels, ys, [ROLE_COLOURS["ranked"], ROLE_COLOURS["random"]], [top, bottom]):
        fig.add_trace(
            go.Bar(
                x=[label],
                y=[y],
                name=label,
                marker_color=colour,
                customdata=[_short(heads, 12)],
                text=_bar_text([y]),
                textposition="outside",
                hovertemplate="%{x}: %{y:.4g}<br>heads: %{customdata}<extra></extra>",
            )
        )
    ranked = check.get("ranked_by")
    sub = f"top: {_short(top)} · bottom: {_short(bottom)}" + (f" · ranked by {ranked}" if ranked else "")
    return _layout(
        fig,
        title + f"<br><sup>{sub}</sup>",
        340,
        showlegend=False,
        yaxis={"title": {"text": "loss change when removed"}},
        xaxis={"type": "category"},
    )


def budget_decision_figure(decision: Mapping[str, Any], title: str) -> go.Figure:
    """TAPPA's per-layer KV budgets against uniform budgets (the temporal family's ``budget_decision``)."""
    x = list(decision.get("averages") or [])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[_num(v) for v in decision.get("tappa_accuracy") or []],
            mode="lines+markers",
            name="TAPPA budgets (from q-similarity)",
            line={"color": ROLE_COLOURS["ranked"], "width": 2.5},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[_num(v) for v in decision.get("uniform_accuracy") or []],
            mode="lines+markers",
            name="uniform budgets (control)",
            line={"color": ROLE_COLOURS["random"], "dash": "dash"},
        )
    )
    full = _num(decision.get("full_accuracy"))
    if full is not None and x:
        fig.add_trace(
            go.Scatter(
                x=[min(x), max(x)],
                y=[full, full],
                mode="lines",
                name=f"full cache ({full:.3g})",
                line={"color": ROLE_COLOURS["base"], "dash": "dot"},
            )
        )
    return _layout(
        fig,
        title,
        380,
        xaxis={"title": {"text": "prefix keys kept per layer (average)"}},
        yaxis={"title": {"text": "needle accuracy"}, "rangemode": "tozero"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0},
        margin={"b": 100},
    )


def artefact_key(artefacts: Mapping[str, Any], name: str) -> str | None:
    """The key of an artefact, also when a multi-part family prefixed it (``<part>/<name>``)."""
    if name in artefacts:
        return name
    return next((k for k in artefacts if k.endswith("/" + name)), None)


def find_artefact(artefacts: Mapping[str, Any], name: str) -> Any:
    """An artefact by name, also when a multi-part family prefixed it; None when absent."""
    key = artefact_key(artefacts, name)
    return None if key is None else artefacts[key]


def _value(item: Any) -> Any:
    """The value of an artefact, whether given raw or as the report's view (``{"kind": "json", ...}``)."""
    if isinstance(item, Mapping) and item.get("kind") == "json" and "value" in item:
        return item["value"]
    return item


#: The causal artefacts drawn as figures: name -> (builder, title).
CAUSAL_FIGURES: dict[str, tuple[Any, str]] = {
    "kv_budget_curve": (kv_budget_figure, "KV budget: ranked heads vs random heads"),
    "ablation_comparison": (ablation_figure, "Ablation: top-k heads vs random heads"),
    "act_calibration": (act_figure, "ACT calibration before / after"),
    "asr": (asr_figure, "Attack success rate with heads ablated"),
    "removal_check": (removal_figure, "Sink removal: top vs bottom heads"),
    "first_token_removal_check": (removal_figure, "First-token removal: top vs bottom heads"),
    "budget_decision": (budget_decision_figure, "KV budgets: TAPPA vs uniform"),
}


def causal_figures(
    family: str, artefacts: Mapping[str, Any], metrics: Mapping[str, Sequence[Sequence[float | None]]] | None = None
) -> list[tuple[str, go.Figure, str | None]]:
    """Every causal result of a family drawn as a figure: (artefact key, figure, warning or None);
    the key is the artefact's own (``group/asr`` for a part's). ``artefacts`` raw (as the store
    returns them) or as the report's views; ``metrics`` adds the per-head ``ablation_accuracy_drop``
    bars (key: the metric's name)."""
    out: list[tuple[str, go.Figure, str | None]] = []
    for name, (build, title) in CAUSAL_FIGURES.items():
        key = artefact_key(artefacts, name)
        value = _value(artefacts[key]) if key is not None else None
        if key is None or not isinstance(value, Mapping):
            continue
        try:
            fig = build(value, f"{family}: {title}")
        except (TypeError, ValueError, KeyError):  # an artefact of another shape: leave it to the table
            continue
        warning = None
        if name == "act_calibration" and act_worse(value):
            warning = (
                f"ACT made the held-out score worse: {value.get('metric', 'score')} "
                f"{float(value['evaluation_before']):.6g} → {float(value['evaluation_after']):.6g}."
            )
        out.append((key, fig, warning))
    for metric in ("ablation_accuracy_drop",):
        grid = (metrics or {}).get(metric)
        if grid is not None and _finite(grid):
            out.append((metric, head_value_bars(grid, f"{family}: {metric} per head (uniform ablation)", metric), None))
    return out
