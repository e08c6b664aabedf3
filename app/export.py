"""Export a view as one standalone HTML file (plotly.js inlined: it opens offline)."""

from __future__ import annotations

import html
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from workbench.app import blocks as B
from workbench.app.style import CSS


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class _Writer:
    def __init__(self) -> None:
        self.n_figures = 0

    def figure(self, block: B.Figure) -> str:
        first = self.n_figures == 0
        self.n_figures += 1
        div_id = f"fig-{re.sub(r'[^A-Za-z0-9_-]+', '-', block.name) or 'x'}-{self.n_figures}"
        # The first figure carries plotly.js itself; the others reuse it.
        return block.fig.to_html(full_html=False, include_plotlyjs=first, div_id=div_id, config={"displaylogo": False})

    def table(self, block: B.Table) -> str:
        if not block.rows:
            return '<p class="muted">(no rows)</p>'
        cols = B.columns_of(block)
        head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
        rows = []
        for r in block.rows:
            cells = []
            for c in cols:
                v = r.get(c)
                if B.is_number(v):
                    exact = "" if isinstance(v, float) and not math.isfinite(v) else f' data-value="{_esc(repr(v))}"'
                    cells.append(f'<td class="num"{exact}>{_esc(B.fmt(v))}</td>')
                else:
                    cells.append(f"<td>{_esc(B.fmt(v))}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
        ident = f' id="table-{_esc(block.name)}"' if block.name else ""
        return f'<table class="wb-table"{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'

    def tokens(self, block: B.Tokens) -> str:
        finite = [w for w in block.weights if w is not None and math.isfinite(w)]
        top = max(finite) if finite else 0.0
        spans = []
        for i, (tok, w, pos) in enumerate(zip(block.tokens, block.weights, block.positions)):
            cls = "tok tok-query" if i == block.query else ("tok tok-hidden" if w is None else "tok")
            title = f"position {pos}: {tok!r}" + ("" if w is None else f", attention {w:.4g}")
            spans.append(
                f'<span class="{cls}" title="{_esc(title)}" style="background-color:{B.token_colour(w, top)}">'
                f"{_esc(B.show_token(tok))}</span>"
            )
        return f'<div class="token-view">{"".join(spans)}</div>'

    def render(self, blocks: list[Any]) -> str:
        out = []
        for b in blocks:
            if isinstance(b, B.Heading):
                level = min(4, max(2, b.level))
                out.append(f"<h{level}>{_esc(b.text)}</h{level}>")
            elif isinstance(b, B.Text):
                out.append(f'<p class="{"muted" if b.muted else ""}">{_esc(b.text)}</p>')
            elif isinstance(b, B.Notice):
                hint = f'<br><span class="hint">What to do: {_esc(b.hint)}</span>' if b.hint else ""
                out.append(f'<div class="notice notice-{_esc(b.kind)}">{_esc(b.text)}{hint}</div>')
            elif isinstance(b, B.Link):
                out.append(f"<p>{_esc(b.text)}</p>")  # app-internal links mean nothing in a file
            elif isinstance(b, B.Table):
                out.append(self.table(b))
            elif isinstance(b, B.Figure):
                out.append(f'<div class="wb-graph">{self.figure(b)}</div>')
            elif isinstance(b, B.Tokens):
                out.append(self.tokens(b))
            elif isinstance(b, B.Section):
                out.append(f"<section><h2>{_esc(b.title)}</h2>{self.render(b.blocks)}</section>")
            elif isinstance(b, B.Grid):
                out.append(f'<div class="grid">{self.render(b.blocks)}</div>')
        return "".join(out)


def render_html(title: str, blocks: list[Any]) -> str:
    """The whole document: header, the blocks, plotly.js inlined once."""
    body = _Writer().render(blocks)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_esc(title)}</title>'
        f'<style>{CSS}</style></head><body><header class="wb-header"><h1>{_esc(title)}</h1>'
        f'<div class="meta">exported from the Attention Workbench dashboard, {stamp}</div></header>'
        f"<main>{body}</main></body></html>\n"
    )


def export_folder(preferred: Path | None, results: Path) -> Path:
    """Where exports go: the given folder, else ``<results>/exports``, else a temporary folder
    (when the results folder is missing or read-only)."""
    for candidate in ([preferred] if preferred is not None else []) + [results / "exports"]:
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / ".wb-write-probe"
            probe.write_bytes(b"")
            probe.unlink()
            return candidate
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="workbench-exports-"))


def file_name(view: str, *parts: str) -> str:
    words = [view, *[p for p in parts if p]]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(words)).strip("-.")[:120] or "view"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{int(time.time() * 1000) % 1000:03d}.html"


def write_export(folder: Path, name: str, title: str, blocks: list[Any]) -> Path:
    path = folder / name
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(title, blocks), encoding="utf-8")
    tmp.replace(path)
    return path
