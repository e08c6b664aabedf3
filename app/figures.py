"""Figures only the dashboard draws (the layer x head heatmaps come from `workbench.report.figures`).

Pure functions from arrays to `go.Figure`, with ``template=None`` so that no theme is sent along.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.app.patterns import LABEL_LIMIT, PatternGrid
from workbench.report.figures import TOP_MARGIN, apply_layout


def _layout(fig: go.Figure, title: str, height: int, **extra: Any) -> go.Figure:
    """The report's house layout (title below the modebar, axes sized to their tick labels)."""
    return apply_layout(fig, title, height, **extra)


def pattern_figure(grid: PatternGrid, labels: list[str], title: str, log_scale: bool = False) -> go.Figure:
    """A head's pattern (rows: queries, columns: keys). ``grid.values`` goes out as a float32 typed array."""
    z = grid.values
    if log_scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(np.isfinite(z), np.log10(np.clip(z, 1e-6, None)), np.nan).astype(np.float32)
    what = "attention" if grid.block == 1 else "share of a query's attention"
    bar = ("log10 " if log_scale else "") + ("attention" if grid.block == 1 else "attention share")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            colorscale="Viridis",
            hoverongaps=False,
            zmin=None if log_scale else 0.0,
            colorbar={"title": {"text": bar, "side": "right"}},
            hovertemplate="query %{y}<br>key %{x}<br>" + what + (" (log10)" if log_scale else "") + " = %{z:.4g}<extra></extra>",
        )
    )
    show = len(labels) <= LABEL_LIMIT
    axis = {"showgrid": False, "zeroline": False, "showticklabels": show, "type": "category"}
    side = min(760, 260 + 4 * len(labels))
    margin = {"l": 120, "r": 20, "t": TOP_MARGIN, "b": 120} if show else {"l": 70, "r": 20, "t": TOP_MARGIN, "b": 60}
    return _layout(
        fig,
        title,
        side + margin["b"],
        plot_bgcolor="#f3f4f6",
        margin=margin,
        xaxis={**axis, "title": {"text": "key" + ("" if grid.block == 1 else f" block ({grid.block} tokens)")}, "tickangle": -60},
        yaxis={
            **axis,
            "title": {"text": "query" + ("" if grid.block == 1 else f" block ({grid.block} tokens)")},
            "autorange": "reversed",
        },
    )


def spectrum_figure(omega: np.ndarray, magnitude_db: np.ndarray, phase: np.ndarray, title: str) -> go.Figure:
    """Bode plot of a head's offset profile seen as a filter: |H(w)| in dB and the phase."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    x = (np.asarray(omega) / np.pi).tolist()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=np.asarray(magnitude_db).tolist(),
            mode="lines",
            name="|H| (dB)",
            line={"color": "#4c78a8"},
            hovertemplate="ω/π %{x:.3f}: %{y:.2f} dB<extra></extra>",
        ),
        1,
        1,
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=np.asarray(phase).tolist(),
            mode="lines",
            name="phase (rad)",
            line={"color": "#f58518"},
            hovertemplate="ω/π %{x:.3f}: %{y:.3f} rad<extra></extra>",
        ),
        2,
        1,
    )
    fig.update_yaxes(title_text="|H| (dB)", row=1, col=1)
    fig.update_yaxes(title_text="phase (rad)", row=2, col=1)
    fig.update_xaxes(title_text="frequency ω/π (cycles per 2 tokens)", row=2, col=1)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return _layout(fig, title, 440, showlegend=False)


def offset_profile_figure(profile: Sequence[float], title: str) -> go.Figure:
    """Mean attention by offset (query position minus key position)."""
    y = [float(v) for v in profile]
    fig = go.Figure(
        go.Bar(x=list(range(len(y))), y=y, marker_color="#54a24b", hovertemplate="offset %{x}: %{y:.4g}<extra></extra>")
    )
    return _layout(
        fig, title, 300, xaxis={"title": {"text": "offset (tokens back)"}}, yaxis={"title": {"text": "mean attention"}}
    )


def next_token_figure(rows: Sequence[dict[str, Any]], title: str, log_scale: bool = True) -> go.Figure:
    """Next-token probabilities without and with the ablation, one pair of bars per token. On a
    log axis (``log_scale``, the default) so the tokens after the top one stay visible; the bars
    are labelled with the probability and the hover gives the log-probability too."""
    labels = [f"{r['token']!r}" for r in rows][::-1]
    floor = 1e-12
    fig = go.Figure()
    for key, name, colour, extra in (
        ("p_without", "without ablation", "#4c78a8", "without"),
        ("p_with", "with ablation", "#e45756", "with"),
    ):
        ps = [max(float(r[key]), floor) if log_scale else float(r[key]) for r in rows][::-1]
        logs = [math.log(max(float(r[key]), 1e-300)) for r in rows][::-1]
        fig.add_trace(
            go.Bar(
                y=labels,
                x=ps,
                orientation="h",
                name=name,
                marker_color=colour,
                customdata=logs,
                text=[f"{p:.3g}" for p in ps],
                textposition="outside",
                cliponaxis=False,
                hovertemplate="%{y}: p = %{x:.4g} (log p = %{customdata:.3f})<extra>" + extra + "</extra>",
            )
        )
    positive = [max(float(r[k]), floor) for r in rows for k in ("p_without", "p_with")]
    xaxis: dict[str, Any] = {"title": {"text": "probability of the next token" + (" (log scale)" if log_scale else "")}}
    if log_scale and positive:
        lo = math.floor(math.log10(min(positive))) - 0.2
        xaxis.update({"type": "log", "range": [lo, 0.35], "dtick": 1, "exponentformat": "power"})
    return _layout(
        fig,
        title,
        max(300, 110 + 30 * len(rows)),
        barmode="group",
        xaxis=xaxis,
        margin={"l": 120, "r": 40, "t": TOP_MARGIN, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1.0, "xanchor": "right"},
    )


def rope_share_figure(shares: Sequence[float], periods: Sequence[float] | None, title: str) -> go.Figure:
    """Share of |q·k| per RoPE channel pair; tick labels carry each pair's period, drawn whole."""
    x = [
        f"{i}" + (f" (T≈{p:.3g})" if periods is not None else "")
        for i, p in zip(range(len(shares)), periods if periods is not None else [0] * len(shares))
    ]
    fig = go.Figure(
        go.Bar(x=x, y=[float(s) for s in shares], marker_color="#b279a2", hovertemplate="pair %{x}: %{y:.3f}<extra></extra>")
    )
    return _layout(
        fig,
        title,
        360,
        xaxis={
            "title": {"text": "RoPE channel pair (period in tokens)"},
            "type": "category",
            "tickangle": -45 if periods is not None or len(x) > 16 else 0,
            "automargin": True,
        },
        yaxis={"title": {"text": "share of |q·k|"}},
        margin={"b": 100},
    )
