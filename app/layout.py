"""Layout builders: the page shell, routes, and each page's controls (no callbacks here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from dash import dcc, html

from workbench.app import blocks as B
from workbench.app.style import CSS

POLL_MS = 400

INDEX = (
    """<!DOCTYPE html>
<html lang="en"><head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}<style>"""
    + CSS
    + """</style></head>
<body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body></html>"""
)


@dataclass
class Route:
    view: str  # runs | atlas | head | playground | compare | missing
    run: str | None = None
    head: str | None = None
    query: dict[str, str] = field(default_factory=dict)

    def key(self) -> dict[str, Any]:
        return {"view": self.view, "run": self.run, "head": self.head, "query": self.query}

    @classmethod
    def from_key(cls, key: dict[str, Any] | None) -> Route:
        key = key or {}
        return cls(key.get("view", "runs"), key.get("run"), key.get("head"), dict(key.get("query") or {}))


def parse_route(pathname: str | None, search: str | None) -> Route:
    parts = [p for p in (pathname or "/").split("/") if p]
    query = {k: v[-1] for k, v in parse_qs((search or "").lstrip("?")).items()}
    if not parts:
        return Route("runs", query=query)
    if parts == ["compare"]:
        return Route("compare", query=query)
    if parts[0] == "run" and len(parts) == 2:
        return Route("atlas", parts[1], query=query)
    if parts[0] == "run" and len(parts) == 4 and parts[2] == "head":
        return Route("head", parts[1], parts[3], query=query)
    if parts[0] == "run" and len(parts) == 3 and parts[2] == "playground":
        return Route("playground", parts[1], query=query)
    return Route("missing", query={"path": pathname or ""})


# -- the shell -------------------------------------------------------------------------------------


def shell(results: Path, refresh_ms: int, signature: str | None = None) -> Any:
    """The frame of every page; ``signature`` is the store's state when the page was loaded (pages
    re-render their store-backed part when it changes)."""
    return html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            html.Header(
                [
                    html.H1("Attention Workbench"),
                    html.Nav(
                        [dcc.Link("Runs", href="/", id="nav-runs"), dcc.Link("Compare runs", href="/compare", id="nav-compare")]
                    ),
                    html.Span(f"results: {results}", className="meta", id="results-path"),
                ],
                className="wb-header",
            ),
            dcc.Interval(id="refresh", interval=refresh_ms),
            dcc.Store(id="store-sig", data=signature),
            dcc.Store(id="pattern-request", storage_type="session"),
            html.Div(id="page"),
        ]
    )


def page_frame(title: str, route: Route, view: str, top: list[Any] | None = None, bottom: list[Any] | None = None) -> list[Any]:
    """Title, links, the export button, then the refreshable body, then live panels."""
    return [
        html.H2(title, id="page-title"),
        *(top or []),
        export_bar(view),
        dcc.Store(id="page-key", data=route.key()),
        html.Div(id="page-body"),
        *(bottom or []),
    ]


def export_bar(view: str) -> Any:
    return html.Div(
        [
            html.Button("Export this view as HTML", id=f"export-{view}", className="wb-button wb-secondary", n_clicks=0),
            html.Span(id=f"export-{view}-result", className="export-result"),
        ],
        className="controls",
    )


def progress(fraction: float | None, message: str, state: str = "running") -> list[Any]:
    if state == "error":
        return [html.Span(message, className="progress-text", id="progress-error")]
    pct = 0 if fraction is None else int(round(100 * fraction))
    attrs: dict[str, Any] = {"aria-valuenow": str(pct), "data-state": state}
    return [
        html.Div(
            html.Div(className="progress-inner", style={"width": f"{pct}%"}),
            className="progress-outer",
            role="progressbar",
            **attrs,
        ),
        html.Span(f"{pct}% · {message}", className="progress-text"),
    ]


def problem(message: str, hint: str | None = None, kind: str = "error") -> list[Any]:
    return B.to_dash([B.Notice(message, kind, hint=hint)])


def field_(label: str, component: Any, width: str | None = None) -> Any:
    return html.Div([html.Label(label), component], className="field", style={"minWidth": width} if width else None)


def _links(*pairs: tuple[str, str, str]) -> Any:
    return html.P([item for text, href, ident in pairs for item in (dcc.Link(text, href=href, id=ident), "  ·  ")][:-1])


# -- pages ------------------------------------------------------------------------------------------


def runs_page(route: Route) -> list[Any]:
    return page_frame("Runs", route, "runs", bottom=[new_atlas_panel()])


def new_atlas_panel() -> Any:
    """Start an atlas run from the page (the same `workbench.Atlas` run as `workbench atlas MODEL`)."""
    from workbench.families.registry import family_names

    names = family_names()
    return html.Details(
        [
            html.Summary("Run a new atlas"),
            html.Div(
                [
                    dcc.Input(
                        id="atlas-model",
                        type="text",
                        placeholder="model: shipped name, folder or cached hub id",
                        className="wb-input",
                        debounce=False,
                    ),
                    dcc.Checklist(
                        id="atlas-families", options=[{"label": n, "value": n} for n in names], value=names, inline=True
                    ),
                    dcc.Input(
                        id="atlas-n-prompts",
                        type="number",
                        min=1,
                        placeholder="prompts per family (default)",
                        className="wb-input",
                    ),
                    dcc.Input(id="atlas-max-tokens", type="number", min=2, placeholder="max tokens (256)", className="wb-input"),
                    html.Button("Run atlas", id="atlas-start", className="wb-button", n_clicks=0),
                ],
                className="controls",
            ),
            html.Div(id="atlas-progress"),
            html.Div(id="atlas-output"),
            dcc.Store(id="atlas-job"),
            dcc.Interval(id="atlas-poll", interval=500, disabled=True),
        ],
        id="new-atlas",
        className="panel",
    )


def atlas_page(route: Route) -> list[Any]:
    rid = route.run
    links = _links(
        ("ablation playground", f"/run/{rid}/playground", "link-playground"),
        ("compare with another run", f"/compare?b={rid}", "link-compare"),
    )
    return page_frame(f"Head atlas · run {rid}", route, "atlas", top=[links])


def head_page(
    route: Route,
    run: Any,
    layer: int,
    head: int,
    prompts: list[str],
    remembered: dict | None,
    scored: list[dict[str, Any]] | None = None,
) -> list[Any]:
    """The head page's frame and live panels. The pattern opens on the prompt the atlas scored the
    head on: a prompt of the run's file, else prompt 0 of the text family that claims the head (rebuilt
    from the run's seed, `workbench.app.live.atlas_prompt`); random tokens only when neither exists."""
    rid, label = run.run_id, f"L{layer}H{head}"
    n_heads = run.n_heads or 1
    flat = layer * n_heads + head
    total = (run.n_layers or 1) * n_heads
    prev_l, prev_h = divmod((flat - 1) % total, n_heads)
    next_l, next_h = divmod((flat + 1) % total, n_heads)
    links = _links(
        ("← head atlas", f"/run/{rid}", "link-atlas"),
        (f"previous (L{prev_l}H{prev_h})", f"/run/{rid}/head/L{prev_l}H{prev_h}", "link-prev"),
        (f"next (L{next_l}H{next_h})", f"/run/{rid}/head/L{next_l}H{next_h}", "link-next"),
        (f"ablate {label} in the playground", f"/run/{rid}/playground?heads={label}", "link-ablate"),
    )
    mem = remembered if remembered and remembered.get("run") == rid else {}
    max_tokens = int((run.config or {}).get("max_tokens") or 64)
    scored = [] if prompts else list(scored or [])  # a prompt file is what every text family scored
    default_source = "run" if prompts else "atlas" if scored else "random"
    sources = [{"label": "typed text", "value": "text"}, {"label": "random tokens", "value": "random"}]
    if prompts:
        sources.insert(0, {"label": "the run's prompts (scored by the atlas)", "value": "run"})
    if scored:
        sources.insert(0, {"label": "the prompts the atlas scored it on", "value": "atlas"})
    scored_options = [
        {"label": f"{s['family']} prompt {i}" + (f" ({s['source']})" if s["source"] else ""), "value": f"{s['family']}:{i}"}
        for s in scored
        for i in range(int(s["n"]))
    ]
    scored_values = [o["value"] for o in scored_options]
    scored_value = mem.get("scored") if mem.get("scored") in scored_values else (scored_values[0] if scored_values else None)
    controls = html.Div(
        [
            field_(
                "prompt",
                dcc.RadioItems(id="prompt-source", options=sources, value=mem.get("source", default_source), inline=True),
            ),
            html.Div(
                field_(
                    "run prompt",
                    dcc.Dropdown(
                        id="prompt-index",
                        clearable=False,
                        value=int(mem.get("index", 0) or 0),
                        options=[{"label": f"{i}: {t[:60]}", "value": i} for i, t in enumerate(prompts)],
                    ),
                    "260px",
                ),
                style=None if prompts else {"display": "none"},
            ),
            html.Div(
                field_(
                    "scored prompt",
                    dcc.Dropdown(id="prompt-scored", clearable=False, value=scored_value, options=scored_options),
                    "300px",
                ),
                style=None if scored else {"display": "none"},
            ),
            field_(
                "random tokens: length",
                dcc.Input(
                    id="prompt-length", type="number", min=2, step=1, value=int(mem.get("length", max_tokens) or max_tokens)
                ),
            ),
            field_(
                "seed",
                dcc.Input(id="prompt-seed", type="number", step=1, value=int(mem.get("seed", 0) or 0), style={"width": "80px"}),
            ),
            field_(
                "colour",
                dcc.RadioItems(
                    id="pattern-scale",
                    options=[{"label": "linear", "value": "linear"}, {"label": "log", "value": "log"}],
                    value="linear",
                    inline=True,
                ),
            ),
            html.Button("Show pattern", id="pattern-show", className="wb-button", n_clicks=0),
        ],
        className="controls",
    )
    text = dcc.Textarea(
        id="prompt-text",
        className="wb-prompt",
        value=mem.get("text", ""),
        placeholder="type a prompt (used when 'typed text' is chosen)",
    )
    pattern = html.Section(
        [
            html.H2("Attention pattern"),
            html.P(
                "Short prompts show the full pattern; long ones the recorder's block-pooled map (the model is run "
                "live, once per prompt and layer).",
                className="muted",
            ),
            controls,
            text,
            html.Div(id="prompt-warning", className="prompt-warning"),
            html.Div(id="pattern-progress"),
            dcc.Interval(id="pattern-poll", interval=POLL_MS, disabled=True),
            dcc.Store(id="pattern-job"),
            dcc.Store(id="pattern-ready"),
            html.Div(id="pattern-output"),
        ],
        id="section-pattern",
    )
    tokens = html.Section(
        [
            html.H2("Token view"),
            html.Div(
                [
                    field_(
                        "query position (or click a row of the pattern)",
                        dcc.Input(id="token-query", type="number", min=0, step=1, debounce=True),
                    )
                ],
                className="controls",
            ),
            html.Div(id="token-output"),
        ],
        id="section-tokens",
    )
    return page_frame(f"{label} · run {rid}", route, "head", top=[links], bottom=[pattern, tokens])


def playground_page(route: Route, run: Any, prompts: list[str]) -> list[Any]:
    rid = run.run_id
    heads = [f"L{layer}H{h}" for layer in range(run.n_layers or 0) for h in range(run.n_heads or 0)]
    chosen = [h for h in (route.query.get("heads") or "").split(",") if h in heads]
    form = html.Section(
        [
            html.H2("Ablation playground"),
            html.P(
                "Pick heads, type a prompt and run: the next-token distribution and the greedy continuation, with and "
                "without the heads, on the run's model (loaded once, then kept).",
                className="muted",
            ),
            html.Div(
                [
                    field_(
                        "heads to ablate",
                        dcc.Dropdown(id="play-heads", options=heads, value=chosen, multi=True, placeholder="L0H1, L2H3 ..."),
                        "320px",
                    ),
                    field_(
                        "ablation",
                        dcc.RadioItems(
                            id="play-mode",
                            value="uniform",  # the atlas's ablation (workbench.app.live.PLAYGROUND_MODE)
                            inline=True,
                            options=[
                                {"label": "uniform attention", "value": "uniform"},
                                {"label": "zero", "value": "zero"},
                                {"label": "mean (over the prompt)", "value": "mean"},
                            ],
                        ),
                    ),
                    field_(
                        "top tokens", dcc.Input(id="play-topk", type="number", min=1, max=50, value=10, style={"width": "70px"})
                    ),
                    field_(
                        "new tokens", dcc.Input(id="play-new", type="number", min=0, max=64, value=12, style={"width": "70px"})
                    ),
                    html.Button("Run", id="play-run", className="wb-button", n_clicks=0),
                ],
                className="controls",
            ),
            dcc.Textarea(
                id="play-prompt", className="wb-prompt", value=prompts[0] if prompts else "", placeholder="type a prompt"
            ),
            html.Div(id="play-prompt-warning", className="prompt-warning"),
            html.Div(id="play-progress"),
            dcc.Interval(id="play-poll", interval=POLL_MS, disabled=True),
            dcc.Store(id="play-job"),
            html.Div(id="play-output"),
        ],
        id="section-playground",
    )
    links = _links(("← head atlas", f"/run/{rid}", "link-atlas"))
    return page_frame(f"Ablation playground · run {rid}", route, "playground", top=[links, form])


def compare_page(route: Route, choice: dict[str, Any]) -> list[Any]:
    runs = [{"label": f"{r.run_id} ({r.model}, {r.status})", "value": r.run_id} for r in choice["runs"]]
    controls = html.Div(
        [
            field_("run A", dcc.Dropdown(id="compare-a", options=runs, value=choice["a"], clearable=False), "320px"),
            field_("run B", dcc.Dropdown(id="compare-b", options=runs, value=choice["b"], clearable=False), "320px"),
            field_(
                "family",
                dcc.Dropdown(id="compare-family", options=choice["families"], value=choice["family"], clearable=False),
                "160px",
            ),
            field_(
                "metric",
                dcc.Dropdown(id="compare-metric", options=choice["metrics"], value=choice["metric"], clearable=False),
                "220px",
            ),
        ],
        className="controls",
    )
    return page_frame("Compare two runs", route, "compare", top=[controls])


def missing_page(route: Route) -> list[Any]:
    return [
        html.H2("Not found", id="page-title"),
        *problem(f"There is no page {route.query.get('path', '')!r}.", "go back to the list of runs", "warn"),
        dcc.Link("list of runs", href="/"),
    ]
