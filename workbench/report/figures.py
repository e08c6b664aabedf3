"""Plotly figure builders: pure functions from plain data (lists, dicts) to `go.Figure`.

Used by the HTML report and the compare report, and reusable by the dashboard. Values are
passed as Python lists with None for NaN, so the figure JSON carries exactly the store's numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


def _layout(fig: go.Figure, title: str, height: int, **extra: Any) -> go.Figure:
    base: dict[str, Any] = {"margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "plot_bgcolor": "white"}
    fig.update_layout(
        template=None,
        title={"text": title, "font": {"size": 14}, "x": 0.02},
        height=height,
        font=_FONT,
        paper_bgcolor="white",
        **{**base, **extra},
    )
    return fig


def head_heatmap(
    values: Sequence[Sequence[float | None]], title: str, metric: str, colorscale: str = "Viridis", zmid: float | None = None
) -> go.Figure:
    """A layer x head heatmap (layer 0 at the top); None cells are left blank."""
    n_layers = len(values)
    n_heads = len(values[0]) if n_layers else 0
    text = [[f"L{layer}H{h}" for h in range(n_heads)] for layer in range(n_layers)]
    fig = go.Figure(
        go.Heatmap(
            z=[list(row) for row in values],
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            text=text,
            colorscale=colorscale,
            zmid=zmid,
            colorbar={"title": {"text": metric, "side": "right"}},
            hovertemplate="%{text}<br>" + metric + " = %{z:.4g}<extra></extra>",
            hoverongaps=False,
        )
    )
    height = max(260, min(900, 60 + 22 * n_layers))
    return _layout(
        fig,
        title,
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


def layer_bar(values: Sequence[float | None], title: str, ylabel: str) -> go.Figure:
    fig = go.Figure(
        go.Bar(
            x=list(range(len(values))),
            y=list(values),
            marker_color="#4c78a8",
            hovertemplate="layer %{x}: %{y:.4g}<extra></extra>",
        )
    )
    return _layout(fig, title, 300, xaxis={"title": {"text": "layer"}, "dtick": 1}, yaxis={"title": {"text": ylabel}})


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
        max(260, 40 + 22 * len(top)),
        xaxis={"title": {"text": "times a sink (prompt x position)"}},
        margin={"l": 140, "r": 20, "t": 50, "b": 50},
    )


def class_heatmap(rows: Sequence[dict[str, Any]], n_layers: int, n_heads: int, title: str, column: str = "class") -> go.Figure:
    """Categorical layer x head map (e.g. temporal classes): one colour per class."""
    classes = sorted({str(r[column]) for r in rows})
    index = {c: i for i, c in enumerate(classes)}
    z: list[list[float | None]] = [[None] * n_heads for _ in range(n_layers)]
    text = [[f"L{layer}H{h}" for h in range(n_heads)] for layer in range(n_layers)]
    for r in rows:
        z[int(r["layer"])][int(r["head"])] = index[str(r[column])]
        text[int(r["layer"])][int(r["head"])] += f": {r[column]}"
    palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac", "#eeca3b"]
    n = max(1, len(classes))
    scale = []
    for i in range(n):
        colour = palette[i % len(palette)]
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            text=text,
            colorscale=scale,
            zmin=-0.5,
            zmax=n - 0.5,
            hovertemplate="%{text}<extra></extra>",
            colorbar={"tickvals": list(range(n)), "ticktext": classes},
            hoverongaps=False,
        )
    )
    return _layout(
        fig,
        title,
        max(260, min(900, 60 + 22 * n_layers)),
        xaxis={"title": {"text": "head"}, "dtick": 1 if n_heads <= 32 else None, "showgrid": False},
        yaxis={"title": {"text": "layer"}, "autorange": "reversed", "dtick": 1 if n_layers <= 40 else None, "showgrid": False},
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
