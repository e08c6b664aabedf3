"""The Dash callbacks: thin wrappers that read the route and state, call the views, and draw blocks.

Nothing here raises into Dash: a missing or damaged store, a bad head address or a failed live
computation turns into a readable notice on the page (and a traceback in the server log only
for real bugs).
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from dash import ALL, MATCH, Input, Output, State, ctx, dcc, html, no_update

from workbench.app import blocks as B
from workbench.app import layout as L
from workbench.app.data import StoreUnavailable, current_signature, reading, run_prompts, scored_prompts
from workbench.app.export import file_name, write_export
from workbench.app.live import PLAYGROUND_MODE, PromptSpec
from workbench.app.patterns import label_position
from workbench.app.views.atlas import atlas_blocks, metric_heatmap
from workbench.app.views.compare import choices, compare_blocks
from workbench.app.views.head import head_blocks
from workbench.app.views.live_views import pattern_blocks, playground_blocks, token_blocks
from workbench.app.views.runs import runs_blocks
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.interventions.ablation import AblationMode

log = logging.getLogger("workbench.app")


def explain(exc: BaseException) -> list[Any]:
    """A page fragment for an error: the user's fault or the store's, or (logged) a bug."""
    if isinstance(exc, (StoreUnavailable, WorkbenchError)):
        return L.problem(exc.message, exc.hint)
    log.error("dashboard error:\n%s", "".join(traceback.format_exception(exc)))
    return L.problem(
        f"Something went wrong: {type(exc).__name__}: {exc}",
        "see the terminal running `workbench app` for details; reload to try again",
    )


def parse_head_label(label: str | None, run: Any) -> tuple[int, int]:
    from workbench.models.heads import parse_head

    head = parse_head(label or "", run.n_layers, run.n_heads)
    return head.layer, head.head


def register(app: Any, state: Any) -> None:  # one place that wires every callback
    results = state.results

    # -- pages -------------------------------------------------------------------------------------

    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"), State("pattern-request", "data"))
    def page(pathname: str, search: str, remembered: dict | None) -> list[Any]:
        route = L.parse_route(pathname, search)
        try:
            if route.view == "runs":
                return L.runs_page(route)
            if route.view == "atlas":
                return L.atlas_page(route)
            if route.view == "compare":
                with reading(results) as store:
                    choice = choices(
                        store, route.query.get("a"), route.query.get("b"), route.query.get("family"), route.query.get("metric")
                    )
                return L.compare_page(route, choice)
            if route.view in ("head", "playground"):
                with reading(results) as store:
                    run = store.run(route.run)
                    prompts = run_prompts(store, run.run_id)
                    if route.view == "playground":
                        return L.playground_page(route, run, prompts)
                    layer, head = parse_head_label(route.head, run)
                    scored = scored_prompts(store, run.run_id, layer, head)
                return L.head_page(route, run, layer, head, prompts, remembered, scored)
            return L.missing_page(route)
        except Exception as exc:
            return [html.H2("Attention Workbench", id="page-title"), *explain(exc), dcc.Link("list of runs", href="/")]

    @app.callback(Output("store-sig", "data"), Input("refresh", "n_intervals"), State("store-sig", "data"))
    def store_signature(_: int, old: str | None) -> Any:
        sig = current_signature(results)
        return no_update if sig == old else sig

    @app.callback(Output("page-body", "children"), Input("page-key", "data"), Input("store-sig", "data"))
    def body(key: dict | None, _sig: str | None) -> list[Any]:
        if key is None:
            return []
        route = L.Route.from_key(key)
        try:
            return B.to_dash(view_blocks(state, route))
        except Exception as exc:
            return explain(exc)

    # -- atlas -------------------------------------------------------------------------------------

    @app.callback(
        Output({"type": "family-graph", "family": MATCH}, "figure"),
        Input({"type": "metric-select", "family": MATCH}, "value"),
        State("url", "pathname"),
        prevent_initial_call=True,
    )
    def choose_metric(metric: str, pathname: str) -> Any:
        route = L.parse_route(pathname, "")
        family = ctx.triggered_id["family"]
        try:
            with reading(results) as store:
                hs = store.scores(store.run(route.run).run_id, family)[family]
            return metric_heatmap(family, metric, hs.metrics[metric])
        except Exception:  # keep the figure; the body shows store problems
            return no_update

    @app.callback(
        Output("url", "pathname"),
        Input({"type": "family-graph", "family": ALL}, "clickData"),
        State("url", "pathname"),
        prevent_initial_call=True,
    )
    def open_head(clicks: list, pathname: str) -> Any:
        route = L.parse_route(pathname, "")
        value = ctx.triggered[0]["value"] if ctx.triggered else None
        if route.view != "atlas" or not value or not value.get("points"):
            return no_update
        point = value["points"][0]
        return f"/run/{route.run}/head/L{int(point['y'])}H{int(point['x'])}"

    # -- compare -----------------------------------------------------------------------------------

    @app.callback(
        Output("url", "search"),
        Input("compare-a", "value"),
        Input("compare-b", "value"),
        Input("compare-family", "value"),
        Input("compare-metric", "value"),
        State("url", "search"),
        prevent_initial_call=True,
    )
    def compare_choice(a: str, b: str, family: str, metric: str, search: str) -> Any:
        from urllib.parse import urlencode

        query = {k: v for k, v in {"a": a, "b": b, "family": family, "metric": metric}.items() if v}
        new = "?" + urlencode(query)
        return no_update if new == (search or "") else new

    # -- the pattern and token views ----------------------------------------------------------------

    @app.callback(
        Output("pattern-job", "data"),
        Output("pattern-poll", "disabled"),
        Output("pattern-request", "data"),
        Output("pattern-progress", "children"),
        Input("pattern-show", "n_clicks"),
        State("prompt-source", "value"),
        State("prompt-text", "value"),
        State("prompt-index", "value"),
        State("prompt-length", "value"),
        State("prompt-seed", "value"),
        State("prompt-scored", "value"),
        State("url", "pathname"),
        prevent_initial_call=True,
    )
    def start_pattern(
        _: int, source: str, text: str, index: int, length: int, seed: int, scored: str | None, pathname: str
    ) -> Any:
        # Also runs when the head page is drawn (its inputs arrive with the page, one output is in the
        # shell): the page opens on a pattern, by default of the prompt the atlas scored the head on.
        route = L.parse_route(pathname, "")
        chosen = {"source": source, "text": text or "", "index": index, "length": length, "seed": seed, "scored": scored}
        try:
            with reading(results) as store:
                run = store.run(route.run)
                texts = run_prompts(store, run.run_id)
            layer, head = parse_head_label(route.head, run)
            job = state.start_pattern(run, PromptSpec.from_dict(chosen), layer, texts)
        except Exception as exc:
            return None, True, no_update, explain(exc)
        return (
            {"job": job, "layer": layer, "head": head, "run": run.run_id},
            False,
            {**chosen, "run": run.run_id},
            L.progress(0.0, "queued"),
        )

    @app.callback(
        Output("pattern-progress", "children", allow_duplicate=True),
        Output("pattern-output", "children"),
        Output("pattern-ready", "data"),
        Output("pattern-poll", "disabled", allow_duplicate=True),
        Input("pattern-poll", "n_intervals"),
        State("pattern-job", "data"),
        State("pattern-scale", "value"),
        prevent_initial_call=True,
    )
    def poll_pattern(_: int, job_data: dict | None, scale: str) -> Any:
        job = state.jobs.get((job_data or {}).get("job"))
        if job is None or job_data is None:
            return (
                L.progress(None, "the computation was lost (the server restarted?); press Show again", "error"),
                no_update,
                no_update,
                True,
            )
        if job.state in ("queued", "running"):
            return L.progress(job.fraction, job.message), no_update, no_update, False
        if job.state == "error":
            return [], L.problem(job.error or "failed", job.hint), None, True
        entry = state.patterns.get(job.result)
        if entry is None:
            return (
                L.progress(None, "the recorded pattern was dropped from the cache; press Show again", "error"),
                no_update,
                None,
                True,
            )
        layer, head = job_data["layer"], job_data["head"]
        try:
            blocks, info = pattern_blocks(entry, layer, head, scale == "log")
        except Exception as exc:
            return [], explain(exc), None, True
        ready = {"key": job.result, "layer": layer, "head": head, "run": job_data["run"], **info}
        done = L.progress(1.0, f"done in {job.seconds or 0:.1f} s", "done")
        return done, B.to_dash(blocks), ready, True

    @app.callback(
        Output("pattern-output", "children", allow_duplicate=True),
        Input("pattern-scale", "value"),
        State("pattern-ready", "data"),
        prevent_initial_call=True,
    )
    def rescale(scale: str, ready: dict | None) -> Any:
        entry = state.patterns.get((ready or {}).get("key"))
        if entry is None or ready is None:
            return no_update
        blocks, _ = pattern_blocks(entry, ready["layer"], ready["head"], scale == "log")
        return B.to_dash(blocks)

    @app.callback(Output("token-query", "value"), Input("pattern-graph", "clickData"), prevent_initial_call=True)
    def click_query(click: dict | None) -> Any:
        if not click or not click.get("points"):
            return no_update
        pos = label_position(click["points"][0].get("y", ""))
        return no_update if pos is None else pos

    @app.callback(Output("token-output", "children"), Input("pattern-ready", "data"), Input("token-query", "value"))
    def token_view(ready: dict | None, query: Any) -> Any:
        if not ready:
            return html.P("Show a pattern first; then pick a query position.", className="muted")
        entry = state.patterns.get(ready.get("key"))
        if entry is None:
            return L.problem("The recorded pattern is no longer cached.", "press Show pattern again", "warn")
        try:
            q = entry.n_tokens - 1 if query in (None, "") else int(query)
            return B.to_dash(token_blocks(entry, ready["layer"], ready["head"], q))
        except Exception as exc:
            return explain(exc)

    def prompt_warning(text: str | None, pathname: str) -> list[Any]:
        """A notice beside a prompt box while its text is mostly the model's unknown token."""
        try:
            route = L.parse_route(pathname, "")
            with reading(results) as store:
                run = store.run(route.run)
            message = state.prompts.check(run, text)
        except Exception:  # the page itself shows store problems; this notice is only advice
            return []
        return L.problem(message, None, "warn") if message else []

    @app.callback(Output("prompt-warning", "children"), Input("prompt-text", "value"), State("url", "pathname"))
    def head_prompt_warning(text: str | None, pathname: str) -> list[Any]:
        return prompt_warning(text, pathname)

    @app.callback(Output("play-prompt-warning", "children"), Input("play-prompt", "value"), State("url", "pathname"))
    def play_prompt_warning(text: str | None, pathname: str) -> list[Any]:
        return prompt_warning(text, pathname)

    # -- a new atlas run ---------------------------------------------------------------------------

    @app.callback(
        Output("atlas-job", "data"),
        Output("atlas-poll", "disabled"),
        Output("atlas-progress", "children"),
        Input("atlas-start", "n_clicks"),
        State("atlas-model", "value"),
        State("atlas-families", "value"),
        State("atlas-n-prompts", "value"),
        State("atlas-max-tokens", "value"),
        prevent_initial_call=True,
    )
    def start_atlas(_: int, model: str | None, families: list[str] | None, n_prompts: Any, max_tokens: Any) -> Any:
        try:
            job = state.start_atlas(model or "", list(families or []), n_prompts, max_tokens)
        except Exception as exc:
            return None, True, explain(exc)
        return {"job": job}, False, L.progress(0.0, "queued")

    @app.callback(
        Output("atlas-progress", "children", allow_duplicate=True),
        Output("atlas-output", "children"),
        Output("atlas-poll", "disabled", allow_duplicate=True),
        Input("atlas-poll", "n_intervals"),
        State("atlas-job", "data"),
        prevent_initial_call=True,
    )
    def poll_atlas(_: int, job_data: dict | None) -> Any:
        job = state.jobs.get((job_data or {}).get("job"))
        if job is None:
            return L.progress(None, "the run's job was lost (the server restarted?)", "error"), no_update, True
        if job.state in ("queued", "running"):
            return L.progress(job.fraction, job.message), no_update, False
        if job.state == "error":
            return [], L.problem(job.error or "failed", job.hint), True
        link = dcc.Link(f"open run {job.result}", href=f"/run/{job.result}", id="atlas-open")
        return L.progress(1.0, f"done in {job.seconds or 0:.1f} s", "done"), [link], True

    # -- the ablation playground ---------------------------------------------------------------------

    @app.callback(
        Output("play-job", "data"),
        Output("play-poll", "disabled"),
        Output("play-progress", "children"),
        Input("play-run", "n_clicks"),
        Input("play-heads", "value"),
        Input("play-mode", "value"),
        State("play-prompt", "value"),
        State("play-topk", "value"),
        State("play-new", "value"),
        State("play-job", "data"),
        State("url", "pathname"),
        prevent_initial_call=True,
    )
    def start_play(
        _: int,
        heads: list | None,
        mode: AblationMode | None,
        prompt: str,
        top_k: Any,
        n_new: Any,
        previous: dict | None,
        pathname: str,
    ) -> Any:
        if ctx.triggered_id in ("play-heads", "play-mode") and not previous:
            return no_update, no_update, no_update  # live re-runs only once something was run
        route = L.parse_route(pathname, "")
        try:
            with reading(results) as store:
                run = store.run(route.run)
            job = state.start_playground(run, list(heads or []), mode or PLAYGROUND_MODE, prompt or "", top_k, n_new)
        except Exception as exc:
            return no_update, True, explain(exc)
        return {"job": job, "run": run.run_id}, False, L.progress(0.0, "queued")

    @app.callback(
        Output("play-progress", "children", allow_duplicate=True),
        Output("play-output", "children"),
        Output("play-poll", "disabled", allow_duplicate=True),
        Input("play-poll", "n_intervals"),
        State("play-job", "data"),
        prevent_initial_call=True,
    )
    def poll_play(_: int, job_data: dict | None) -> Any:
        job = state.jobs.get((job_data or {}).get("job"))
        if job is None:
            return L.progress(None, "the computation was lost; press Run again", "error"), no_update, True
        if job.state in ("queued", "running"):
            return L.progress(job.fraction, job.message), no_update, False
        if job.state == "error":
            return [], L.problem(job.error or "failed", job.hint), True
        return L.progress(1.0, f"done in {job.seconds or 0:.1f} s", "done"), B.to_dash(playground_blocks(job.result)), True

    # -- exports (one button per view) ---------------------------------------------------------------

    def export(view: str, extra: list[State], build: Any) -> None:
        @app.callback(
            Output(f"export-{view}-result", "children"),
            Input(f"export-{view}", "n_clicks"),
            State("page-key", "data"),
            *extra,
            prevent_initial_call=True,
        )
        def do_export(n: int, key: dict | None, *values: Any) -> Any:
            if not n:
                return no_update
            route = L.Route.from_key(key)
            try:
                title, parts, blocks = build(route, *values)
                path = write_export(state.export_folder(), file_name(view, *parts), title, blocks)
            except Exception as exc:
                return explain(exc)
            state.last_export = path
            return html.Span(
                [
                    "saved ",
                    html.A(path.name, href=f"/exports/{path.name}", target="_blank", id=f"export-{view}-link"),
                    f" in {path.parent}",
                ]
            )

    def build_static(route: L.Route) -> tuple[str, list[str], list[Any]]:
        return page_title(route), [route.run or "", route.head or ""], view_blocks(state, route, for_export=True)

    def build_head(route: L.Route, ready: dict | None, query: Any, scale: str) -> tuple[str, list[str], list[Any]]:
        title, parts, blocks = build_static(route)
        entry = state.patterns.get((ready or {}).get("key"))
        if entry is not None and ready is not None and ready.get("run") == route.run:
            pat, _ = pattern_blocks(entry, ready["layer"], ready["head"], scale == "log")
            q = entry.n_tokens - 1 if query in (None, "") else int(query)
            blocks += [
                B.Section("Attention pattern", pat),
                B.Section("Token view", token_blocks(entry, ready["layer"], ready["head"], q)),
            ]
        return title, parts, blocks

    def build_play(route: L.Route, job_data: dict | None) -> tuple[str, list[str], list[Any]]:
        title, parts, blocks = build_static(route)
        job = state.jobs.get((job_data or {}).get("job"))
        if job is not None and job.state == "done":
            blocks += [B.Section("Ablation playground", playground_blocks(job.result))]
        else:
            blocks += [B.Notice("Nothing was run in the playground yet.", "info")]
        return title, parts, blocks

    export("runs", [], build_static)
    export("atlas", [], build_static)
    export("compare", [], build_static)
    export("head", [State("pattern-ready", "data"), State("token-query", "value"), State("pattern-scale", "value")], build_head)
    export("playground", [State("play-job", "data")], build_play)


def _walk(node: Any) -> Any:
    """Every Dash component in a page (a component, or a list of them), depth first."""
    if isinstance(node, (list, tuple)):
        for child in node:
            yield from _walk(child)
        return
    if node is None or isinstance(node, (str, int, float)):
        return
    yield node
    yield from _walk(getattr(node, "children", None))


def page_title(route: L.Route) -> str:
    return {
        "runs": "Runs",
        "atlas": f"Head atlas · run {route.run}",
        "head": f"{route.head} · run {route.run}",
        "playground": f"Ablation playground · run {route.run}",
        "compare": "Compare two runs",
    }.get(route.view, "Attention Workbench")


def view_blocks(state: Any, route: L.Route, for_export: bool = False) -> list[Any]:
    """The store-backed part of a page, as blocks (the same list is drawn and exported)."""
    with reading(state.results) as store:
        if route.view == "runs":
            return runs_blocks(store, state.results)
        if route.view == "atlas":
            return atlas_blocks(store, route.run, every_metric=for_export)
        if route.view == "head":
            run = store.run(route.run)
            layer, head = parse_head_label(route.head, run)
            return head_blocks(store, run.run_id, layer, head)
        if route.view == "compare":
            q = route.query
            return compare_blocks(store, q.get("a"), q.get("b"), q.get("family"), q.get("metric"))
        if route.view == "playground":
            from workbench.app.views.atlas import run_header

            run = store.run(route.run)
            out = run_header(run)
            note = "model loaded" if state.models.loaded(run) else "the model is loaded on the first run (then kept)"
            out.append(B.Text(f"Model: {run.model} ({note}); device {state.models.device}.", muted=True))
            return out
    return []
