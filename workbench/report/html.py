"""One self-contained HTML file per report (plotly.js inlined, no CDN, no server) plus JSON.

Each figure is a ``<div class="wb-figure">`` followed by its JSON spec in a
``<script type="application/json">``; one inline script draws them all with Plotly. Every
heatmap div carries ``data-family`` and ``data-metric``. The report's data is also embedded
whole as ``<script type="application/json" id="wb-report-data">`` (the same as report.json).
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from workbench.report import figures as F
from workbench.report.data import collect
from workbench.store.artefacts import AtomicFiles, dumps
from workbench.store.store import Store

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #1f2937; color: white; padding: 18px 32px; }
header h1 { margin: 0 0 6px 0; font-size: 22px; }
header .meta { font-size: 13px; opacity: 0.85; }
nav { padding: 8px 32px; background: #e5e7eb; font-size: 13px; position: sticky; top: 0; z-index: 5; }
nav a { margin-right: 14px; color: #1f2937; }
main { padding: 8px 32px 40px 32px; }
section { background: white; border: 1px solid #e5e7eb; border-radius: 6px; padding: 12px 20px; margin: 16px 0; }
h2 { font-size: 19px; margin: 8px 0; } h3 { font-size: 15px; margin: 14px 0 6px 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 8px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
th, td { border-bottom: 1px solid #e5e7eb; padding: 3px 8px; text-align: left; }
th { background: #f3f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f3f4f6; padding: 8px; font-size: 12px; overflow: auto; max-height: 360px; }
.warn { background: #fef3c7; border: 1px solid #f59e0b; padding: 8px 12px; border-radius: 4px; }
.muted { color: #6b7280; font-size: 12.5px; }
.wb-figure { min-height: 240px; }
"""

DRAW_JS = """
(function () {
  var divs = document.querySelectorAll('div.wb-figure');
  for (var i = 0; i < divs.length; i++) {
    var spec = JSON.parse(document.getElementById(divs[i].id + '-spec').textContent);
    Plotly.newPlot(divs[i], spec.data, spec.layout, {responsive: true, displaylogo: false});
  }
  document.body.setAttribute('data-figures-drawn', String(divs.length));
})();
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def script_json(obj: Any) -> str:
    """JSON safe inside a <script> element."""
    return dumps(obj).replace("</", "<\\/").replace("<!--", "<\\!--")


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}"
    return str(value)


def cell(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        exact = "" if (isinstance(value, float) and not math.isfinite(value)) else f' data-value="{esc(repr(value))}"'
        return f'<td class="num"{exact}>{esc(fmt(value))}</td>'
    if isinstance(value, (dict, list)):
        return f"<td>{esc(json.dumps(value)[:200])}</td>"
    return f"<td>{esc(fmt(value))}</td>"


def table(rows: list[dict[str, Any]], columns: list[str] | None = None, css_class: str = "") -> str:
    if not rows:
        return '<p class="muted">(no rows)</p>'
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(cell(r.get(c)) for c in cols) + "</tr>" for r in rows)
    return f'<table class="{esc(css_class)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv_table(data: dict[str, Any]) -> str:
    rows = [{"key": k, "value": v} for k, v in data.items()]
    return table(rows, ["key", "value"])


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


class Page:
    """Collects sections and figures; `render` returns the whole HTML document."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.nav: list[tuple[str, str]] = []
        self._ids: set[str] = set()

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def anchor(self, ident: str, label: str) -> str:
        self.nav.append((ident, label))
        return ident

    def figure(self, fig: Any, ident: str, css_class: str = "", **data_attrs: str) -> str:
        base = f"fig-{slug(ident)}"
        fid, n = base, 1
        while fid in self._ids:
            n += 1
            fid = f"{base}-{n}"
        self._ids.add(fid)
        attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in data_attrs.items())
        spec = fig.to_plotly_json()
        return (
            f'<div class="wb-figure {esc(css_class)}" id="{fid}"{attrs}></div>'
            f'<script type="application/json" id="{fid}-spec">{script_json(spec)}</script>'
        )

    def render(self, header_html: str, data: Any | None = None) -> str:
        from plotly.offline import get_plotlyjs

        nav = "".join(f'<a href="#{esc(i)}">{esc(label)}</a>' for i, label in self.nav)
        embedded = "" if data is None else f'<script type="application/json" id="wb-report-data">{script_json(data)}</script>'
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(self.title)}</title>'
            f'<style>{CSS}</style><script type="text/javascript">{get_plotlyjs()}</script></head><body>'
            f"{header_html}<nav>{nav}</nav><main>{''.join(self.parts)}</main>{embedded}"
            f'<script type="text/javascript">{DRAW_JS}</script></body></html>\n'
        )


# -- the run report ----------------------------------------------------------------------------------

SPECIAL_TABLES = ("sink_tokens", "token_sink_frequency", "retrieval_hits", "temporal_classes")


def _family_section(page: Page, fam: dict[str, Any], n_layers: int, n_heads: int) -> None:
    name = fam["name"]
    ident = page.anchor(f"family-{slug(name)}", name)
    out = [f'<section id="{ident}" class="wb-family" data-family="{esc(name)}"><h2>{esc(name)}</h2>']
    if fam["description"]:
        out.append(f'<p class="muted">{esc(fam["description"])}</p>')
    if fam["status"] != "done":
        done = sum(1 for p in fam["parts"] if p["status"] == "done")
        out.append(
            f'<p class="warn">This family is not finished ({done}/{len(fam["parts"])} parts done); '
            "resume the run to complete it.</p></section>"
        )
        page.add("".join(out))
        return
    out.append(damaged_note(fam.get("damaged", []), "These files of the family cannot be read; they are left out:"))
    scalars = {k: v for k, v in fam["summary"].items() if not isinstance(v, (dict, list))}
    if scalars:
        out.append("<h3>Summary</h3>" + kv_table(scalars))
    primary, evidence = fam["primary_metric"], fam["evidence_metric"]
    if fam["top_heads"]:
        cols = ["rank", "head", primary] + ([evidence] if evidence else [])
        cols += [m for m in fam["metrics"] if m not in cols]
        label = f"Top heads by {primary}" + (f", with the evidence ({evidence})" if evidence else "")
        out.append(f"<h3>{esc(label)}</h3>" + table(fam["top_heads"], cols, "wb-top-heads"))
        if evidence and evidence in fam["descriptions"]:
            out.append(f'<p class="muted">{esc(evidence)}: {esc(fam["descriptions"][evidence])}</p>')
    out.append(f'<p class="muted">Members ({len(fam["members"])}): {esc(", ".join(fam["members"]) or "none")}</p>')
    out.append(
        '<h3>Layer x head maps</h3><p class="muted">Shares, rates and scores in [0, 1] share one colour scale, '
        "so a weak score looks weak next to a strong one.</p>"
        '<div class="grid">'
    )
    scales = F.shared_scale(fam["metrics"])
    for metric, grid in fam["metrics"].items():
        desc = fam["descriptions"].get(metric, "")
        fig = F.metric_heatmap(name, metric, grid, scale=scales.get(metric))
        out.append(
            "<div>"
            + page.figure(fig, f"{name}-{metric}", "wb-heatmap", family=name, metric=metric)
            + (f'<p class="muted">{esc(desc)}</p>' if desc else "")
            + "</div>"
        )
    out.append("</div>")
    out.append(_artefact_views(page, name, fam["artefacts"], n_layers, n_heads, fam["metrics"]))
    out.append("</section>")
    page.add("".join(out))


def _category_legend(classes: list[str]) -> str:
    """A legend of category swatches in the colours every categorical figure uses."""
    items = "".join(
        f'<span class="wb-swatch" data-category="{esc(c["category"])}" data-colour="{esc(c["colour"])}" '
        f'style="display:inline-block;margin-right:14px"><span style="display:inline-block;width:11px;height:11px;'
        f'background:{esc(c["colour"])};border-radius:2px;margin-right:4px;vertical-align:middle"></span>'
        f"{esc(c['category'])}</span>"
        for c in F.category_legend(classes)
    )
    return f'<p class="muted wb-legend">{items}</p>'


def _with_head_name(row: dict[str, Any]) -> dict[str, Any]:
    """A table row with its (layer, head) shown as one "L2H3" column in place of the two numbers."""
    if not isinstance(row.get("layer"), int) or not isinstance(row.get("head"), int):
        return row
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k == "layer":
            out["head"] = F.head_name(row)
        elif k != "head":
            out[k] = v
    return out


def _plain(value: Any) -> Any:
    """A JSON field for a table cell: lists of heads or numbers joined into one string."""
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) or v is None for v in value):
        return ", ".join(fmt(v) for v in value)
    if isinstance(value, list) and all(isinstance(v, list) for v in value):
        return " | ".join(", ".join(F.head_names(v)) for v in value)
    return value


def _causal_views(page: Page, family: str, artefacts: dict[str, Any], metrics: dict[str, Any] | None) -> tuple[str, set[str]]:
    """The family's causal results as figures (with the random controls), a visible warning when a
    check went the wrong way, and the numbers behind each figure folded away. Returns the HTML and
    the artefact names drawn."""
    out: list[str] = []
    drawn: set[str] = set()
    for name, fig, warning in F.causal_figures(family, artefacts, metrics):
        drawn.add(name)
        out.append(f"<h3>{esc(name)}</h3>")
        if warning:
            out.append(f'<p class="warn wb-causal-warning" data-artefact="{esc(name)}">⚠ {esc(warning)}</p>')
        out.append(page.figure(fig, f"{family}-{name}", "wb-causal", family=family, artefact=name))
        view = artefacts.get(name)
        value = view.get("value") if isinstance(view, dict) and view.get("kind") == "json" else None
        if isinstance(value, dict):
            rows = {k: _plain(v) for k, v in value.items()}
            out.append(f'<details><summary class="muted">numbers</summary>{kv_table(rows)}</details>')
    return "".join(out), drawn


def _artefact_views(
    page: Page,
    family: str,
    artefacts: dict[str, Any],
    n_layers: int,
    n_heads: int,
    metrics: dict[str, Any] | None = None,
) -> str:
    """A family's artefacts: figures for the known ones (sink tokens, temporal classes, every causal
    check with its control), tables for the others. ``metrics`` (the family's [layer][head] grids)
    adds the per-head ablation bars."""
    out = []
    freq = artefacts.get("token_sink_frequency")
    if freq and freq["kind"] == "table" and freq["rows"]:
        out.append("<h3>Sink tokens</h3>")
        out.append(page.figure(F.token_bar(freq["rows"], f"{family}: tokens that are sinks most often"), f"{family}-sink-tokens"))
        out.append(table(freq["rows"][:25], ["token", "times_sink", "times_seen", "rate"], "wb-sink-tokens"))
    tokens = artefacts.get("sink_tokens")
    if tokens and tokens["kind"] == "table":
        out.append(
            f'<h3>Hidden sinks</h3><p class="muted">{tokens["n_rows"]} sink (head, position) entries in all; '
            f"hidden ones (after the first token) below.</p>"
        )
        rows = [_with_head_name(r) for r in tokens["rows"][:50]]
        out.append(table(rows, ["prompt", "head", "position", "token", "mean_received"], "wb-hidden-sinks"))
    rate = artefacts.get("sink_rate_per_layer")
    if rate and rate["kind"] == "array" and "values" in rate:
        out.append(
            page.figure(
                F.layer_bar(rate["values"], f"{family}: sink rate per layer (% of heads)", "% heads"), f"{family}-sink-rate"
            )
        )
    hits = artefacts.get("retrieval_hits")
    if hits and hits["kind"] == "table":
        rows = [_with_head_name(r) for r in hits["rows"][:50]]
        out.append("<h3>Retrieval hits</h3>" + table(rows, css_class="wb-retrieval-hits"))
    classes = artefacts.get("temporal_classes")
    if classes and classes["kind"] == "table" and classes["rows"]:
        first = classes["rows"][0]
        column = "class" if "class" in first else "label" if "label" in first else None
        if column and {"layer", "head"} <= set(first):
            out.append("<h3>Temporal classes</h3>")
            out.append(_category_legend(sorted({str(r[column]) for r in classes["rows"]})))
            views = list(dict.fromkeys(str(r.get("input", "")) for r in classes["rows"]))
            figs = []
            for view in views:
                rows = [r for r in classes["rows"] if str(r.get("input", "")) == view]
                title = f"{family}: temporal class per head" + (f" ({view})" if view else "")
                figs.append(
                    page.figure(
                        F.class_heatmap(rows, n_layers, n_heads, title, column),
                        f"{family}-temporal-classes-{view}",
                        "wb-classes",
                        family=family,
                    )
                )
            out.append('<div class="grid">' + "".join(f"<div>{f}</div>" for f in figs) + "</div>")
    causal, drawn = _causal_views(page, family, artefacts, metrics)
    out.append(causal)
    razor = artefacts.get("razor_selection")
    if razor and razor["kind"] == "json" and isinstance(razor["value"], dict):
        rows = [{"selection": k, "heads": ", ".join(F.head_names(v))} for k, v in razor["value"].items()]
        out.append("<h3>razor_selection</h3>" + table(rows, ["selection", "heads"], "wb-razor"))
        drawn.add("razor_selection")
    for name, view in artefacts.items():
        if name in SPECIAL_TABLES or name == "sink_rate_per_layer" or name in drawn:
            continue
        if view["kind"] == "table":
            more = f" (first 25 of {view['n_rows']})" if view["n_rows"] > 25 else ""
            out.append(f"<h3>{esc(name)}{more}</h3>" + table(view["rows"][:25]))
        elif view["kind"] == "json":
            value = view["value"]
            if isinstance(value, dict) and all(
                not isinstance(v, (dict, list)) or len(json.dumps(v)) < 120 for v in value.values()
            ):
                out.append(f"<h3>{esc(name)}</h3>" + kv_table({k: _plain(v) for k, v in value.items()}))
            else:
                out.append(f"<h3>{esc(name)}</h3><pre>{esc(json.dumps(value, indent=1)[:20000])}</pre>")
        elif view["kind"] == "array":
            out.append(f'<p class="muted">array {esc(name)}: {esc(view["dtype"])} {esc(view["shape"])}</p>')
    return "".join(out)


def _cross_family_section(page: Page, data: dict[str, Any], n_layers: int, n_heads: int) -> None:
    ident = page.anchor("cross-family", "cross-family")
    cf = data["cross_family"]
    out = [
        f'<section id="{ident}"><h2>Cross-family view</h2>',
        f'<p class="muted">Families finished: {esc(", ".join(cf["families"]) or "none")}. A head is <i>claimed</i> '
        f"by a family when it passes that family's own criterion (its members); <i>top-{cf['top_k']}</i> lists the "
        "heads ranked highest by each family's primary metric.</p>",
    ]
    if n_layers and n_heads:
        hover = [[f"L{layer}H{h}" for h in range(n_heads)] for layer in range(n_layers)]
        out.append(
            page.figure(
                F.count_heatmap(cf["claimed_counts"], "families claiming each head", hover), "cross-family-claimed", "wb-cross"
            )
        )
    if cf["shared_heads"]:
        top_col = f"top-{cf['top_k']} of"
        rows = [
            {"head": r["head"], "claimed by": ", ".join(r["claimed_by"]), top_col: ", ".join(r["top_k_of"])}
            for r in cf["shared_heads"]
        ]
        out.append("<h3>Heads in more than one family</h3>" + table(rows, ["head", "claimed by", top_col], "wb-shared"))
    else:
        out.append('<p class="muted">No head is in more than one family.</p>')
    out.append("</section>")
    page.add("".join(out))


def _findings_section(page: Page, found: dict[str, Any] | None) -> None:
    """What each head does and how sure we are, before any metric: headlines, warnings, the role table."""
    if not found:
        return
    ident = page.anchor("findings", "findings")
    heads = found.get("rows", [])
    parts = [f'<section id="{ident}"><h2>Findings</h2>']
    parts.append('<ul class="headlines">' + "".join(f"<li>{esc(h)}</li>" for h in found.get("headlines", [])) + "</ul>")
    if found.get("warnings"):
        items = "".join(f"<li>{esc(w)}</li>" for w in found["warnings"])
        parts.append(
            f'<div class="warn" id="findings-warnings"><b>Check these before trusting the numbers:</b><ul>{items}</ul></div>'
        )
    if heads:
        parts.append(
            '<h3>What each head does</h3><p class="meta">Every head a family claims, its role and score, the causal '
            "check behind it (baseline -> with the head ablated, and the mean ± spread of the same check with several "
            "random heads), n and the test's p-value with its correction over the family's tested heads, and whether "
            "the test confirmed it (corrected p <= 0.05 and an effect above the floor).</p>"
        )
        parts.append(table(heads, css_class="role-table").replace("<table", '<table id="role-table"', 1))
    else:
        parts.append("<p>No family claimed any head.</p>")
    parts.append("</section>")
    page.add("".join(parts))


def render_report(data: dict[str, Any]) -> str:
    run = data["run"]
    page = Page(f"Head atlas: {run['model']} ({run['run_id']})")
    n_layers, n_heads = run["n_layers"] or 0, run["n_heads"] or 0
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["created_at"]))
    header = (
        f'<header><h1>Head atlas of {esc(run["model"])}</h1><div class="meta">run {esc(run["run_id"])} · '
        f'status <b id="wb-status">{esc(run["status"])}</b> · started {esc(when)} · {n_layers} layers x {n_heads} heads · '
        f"families {esc(', '.join(run['families']))}</div></header>"
    )
    if run["status"] != "complete":
        page.add(
            f'<p class="warn">This run is <b>{esc(run["status"])}</b> ({run["parts_done"]}/{run["parts_total"]} parts done): '
            f"finished families are shown. Resume it with <code>workbench atlas --resume {esc(run['run_id'])}</code>.</p>"
        )
    if data.get("damaged"):
        intro = "Some files of this run are missing or unreadable: they are left out, everything else is shown."
        page.add(damaged_note(data["damaged"], intro, "damaged"))
    _findings_section(page, data.get("findings"))
    overview = [
        {
            "family": f["name"],
            "status": f["status"],
            "primary metric": f["primary_metric"],
            "evidence": f["evidence_metric"],
            "heads claimed": len(f["members"]),
            "highest primary metric": f["top_heads"][0]["head"] if f["top_heads"] else None,
        }
        for f in data["families"]
    ]
    ident = page.anchor("overview", "overview")
    page.add(f'<section id="{ident}"><h2>Overview</h2>{table(overview)}</section>')
    for fam in data["families"]:
        _family_section(page, fam, n_layers, n_heads)
    _cross_family_section(page, data, n_layers, n_heads)
    ident = page.anchor("config", "config & versions")
    model_rows = {
        k: run.get(k) for k in ("model", "model_kind", "model_path", "model_revision", "model_hash", "n_layers", "n_heads")
    }
    page.add(
        f'<section id="{ident}"><h2>Run config and versions</h2><h3>Model</h3>{kv_table(model_rows)}'
        f"<h3>Config</h3><pre>{esc(json.dumps(data['config'], indent=2))}</pre>"
        f"<h3>Versions</h3><pre>{esc(json.dumps(data['versions'], indent=2))}</pre>"
        f"<h3>Family options</h3><pre>{esc(json.dumps({f['name']: f['options'] for f in data['families']}, indent=2))}</pre>"
        "</section>"
    )
    return page.render(header, data)


def write_report(store: Store, run_ref: str, out: str | Path | None = None, top_k: int = 10) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.json`` (default: into the run's folder). Returns both paths."""
    data = collect(store, run_ref, top_k=top_k)
    folder = Path(out) if out is not None else store.run_dir(data["run"]["run_id"])
    if folder.suffix.lower() == ".html":
        html_path, json_path = folder, folder.with_suffix(".json")
    else:
        html_path, json_path = folder / "report.html", folder / "report.json"
    write_outputs(json_path, dumps(data, indent=1), html_path, render_report(data))
    return html_path, json_path


def write_outputs(json_path: Path, json_text: str, html_path: Path, html_text: str) -> None:
    """Write both files under temporary names, then rename both into place: a failed write (a full
    disk) leaves the previous report whole and no truncated file, and is a `WriteError` naming the
    folder (exit 2), not a traceback."""
    with AtomicFiles() as out:
        out.write_text(json_path, json_text)
        out.write_text(html_path, html_text)


def damaged_note(damaged: list[dict[str, Any]], intro: str = "", ident: str = "") -> str:
    """A visible warning naming each damaged file (``damaged: <path>: <reason>``)."""
    if not damaged:
        return ""
    items = "".join(f'<li class="wb-damaged-file" data-path="{esc(d["path"])}">{esc(d["note"])}</li>' for d in damaged)
    id_attr = f' id="{esc(ident)}"' if ident else ""
    return f'<div class="warn wb-damaged"{id_attr}>{esc(intro)}<ul>{items}</ul></div>'
