"""View content as plain blocks, rendered two ways: Dash components (the app) and HTML (export).

Every view builds a list of blocks from the store or from a live result; `to_dash` draws them
in the browser and `workbench.app.export` writes the same list as a standalone HTML file, so
an exported view shows exactly the numbers the app showed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dash import dcc, html


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    text: str
    muted: bool = False


@dataclass
class Notice:
    """A highlighted message: ``kind`` is "info", "warn" or "error"."""

    text: str
    kind: str = "warn"
    hint: str | None = None


@dataclass
class Link:
    text: str
    href: str


@dataclass
class Table:
    rows: list[dict[str, Any]]
    columns: list[str] | None = None
    name: str = ""
    links: dict[str, str] = field(default_factory=dict)  # column -> row key holding an href


@dataclass
class Figure:
    fig: Any  # plotly go.Figure
    name: str
    graph_id: Any = None  # Dash id (str or dict); default "graph-<name>"


@dataclass
class Tokens:
    """Text coloured by weights (the token view). ``query`` is the index (into ``tokens``) outlined."""

    tokens: list[str]
    weights: list[float | None]
    positions: list[int]
    query: int | None
    name: str = "tokens"


@dataclass
class Control:
    """A Dash-only component (a dropdown, a button): drawn in the app, left out of exports."""

    component: Any


@dataclass
class Section:
    title: str
    blocks: list[Any]
    name: str = ""


@dataclass
class Grid:
    """Blocks side by side (wrapping)."""

    blocks: list[Any]


Block = Heading | Text | Notice | Link | Table | Figure | Tokens | Control | Section | Grid


# -- formatting ------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def columns_of(table: Table) -> list[str]:
    if table.columns:
        return table.columns
    return list(dict.fromkeys(k for row in table.rows for k in row if k not in table.links.values()))


def token_colour(weight: float | None, top: float) -> str:
    if weight is None or not math.isfinite(weight) or top <= 0:
        return "transparent"
    alpha = max(0.0, min(1.0, weight / top))
    return f"rgba(220, 38, 38, {alpha:.3f})"


def show_token(tok: str) -> str:
    return tok.replace("\n", "⏎").replace("\t", "⇥") or "∅"


# -- Dash ------------------------------------------------------------------------------------------

GRAPH_CONFIG: dcc.Graph.Config = {"displaylogo": False, "responsive": True}


def _dash_cell(col: str, row: dict[str, Any], table: Table) -> Any:
    value = row.get(col)
    href_key = table.links.get(col)
    if href_key and row.get(href_key):
        return html.Td(dcc.Link(fmt(value), href=row[href_key]))
    if is_number(value):
        exact: dict[str, Any] = {} if isinstance(value, float) and not math.isfinite(value) else {"data-value": repr(value)}
        return html.Td(fmt(value), className="num", **exact)
    return html.Td(fmt(value))


def _dash_tokens(block: Tokens) -> Any:
    finite = [w for w in block.weights if w is not None and math.isfinite(w)]
    top = max(finite) if finite else 0.0
    spans = []
    for i, (tok, w, pos) in enumerate(zip(block.tokens, block.weights, block.positions)):
        title = f"position {pos}: {tok!r}" + ("" if w is None else f", attention {w:.4g}")
        cls = "tok tok-query" if i == block.query else ("tok tok-hidden" if w is None else "tok")
        data_pos: dict[str, Any] = {"data-pos": str(pos)}
        spans.append(
            html.Span(
                show_token(tok),
                title=title,
                className=cls,
                style={"backgroundColor": token_colour(w, top)},
                **data_pos,
            )
        )
    return html.Div(spans, className="token-view", id=f"tokens-{block.name}")


def to_dash(blocks: list[Any]) -> list[Any]:
    out: list[Any] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append((html.H2 if b.level <= 2 else html.H3 if b.level == 3 else html.H4)(b.text))
        elif isinstance(b, Text):
            out.append(html.P(b.text, className="muted" if b.muted else None))
        elif isinstance(b, Notice):
            parts: list[Any] = [html.Span(b.text)]
            if b.hint:
                parts += [html.Br(), html.Span("What to do: " + b.hint, className="hint")]
            out.append(html.Div(parts, className=f"notice notice-{b.kind}"))
        elif isinstance(b, Link):
            out.append(html.P(dcc.Link(b.text, href=b.href)))
        elif isinstance(b, Table):
            if not b.rows:
                out.append(html.P("(no rows)", className="muted"))
                continue
            cols = columns_of(b)
            head = html.Thead(html.Tr([html.Th(c) for c in cols]))
            body = html.Tbody([html.Tr([_dash_cell(c, r, b) for c in cols]) for r in b.rows])
            out.append(html.Table([head, body], id=f"table-{b.name}" if b.name else None, className="wb-table"))
        elif isinstance(b, Figure):
            gid = b.graph_id if b.graph_id is not None else f"graph-{b.name}"
            out.append(dcc.Graph(id=gid, figure=b.fig, config=GRAPH_CONFIG, className="wb-graph"))
        elif isinstance(b, Tokens):
            out.append(_dash_tokens(b))
        elif isinstance(b, Control):
            out.append(b.component)
        elif isinstance(b, Section):
            out.append(html.Section([html.H2(b.title), *to_dash(b.blocks)], id=f"section-{b.name}" if b.name else None))
        elif isinstance(b, Grid):
            out.append(html.Div(to_dash(b.blocks), className="grid"))
        else:  # pragma: no cover - a programming error
            raise TypeError(f"unknown block {type(b).__name__}")
    return out
