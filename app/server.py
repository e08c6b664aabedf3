"""Building the Dash app and serving it.

    from workbench.app import create_app
    app = create_app("wb-results")          # a dash.Dash; app.workbench holds the live state
    app.run(host="127.0.0.1", port=8050)

`serve` is what `workbench app` calls: it checks the port first and binds to localhost unless
told otherwise (live views run models, so the app should not be open to the network by accident).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.app.jobs import JobManager
from workbench.app.live import (
    ModelCache,
    PatternCache,
    PromptChecker,
    PromptSpec,
    prompt_tokens,
    record_layer,
    run_ablation,
    using,
)
from workbench.errors import InputDataError, WorkbenchError

if TYPE_CHECKING:
    from workbench.interventions.ablation import AblationMode

log = logging.getLogger("workbench.app")


@dataclass
class AppState:
    """What the callbacks share: the results folder, the jobs and the live caches."""

    results: Path
    device: str = "auto"
    export_dir: Path | None = None
    refresh_ms: int = 2000
    jobs: JobManager = field(default_factory=JobManager)
    models: ModelCache = field(default_factory=ModelCache)
    patterns: PatternCache = field(default_factory=PatternCache)
    prompts: PromptChecker = field(default_factory=PromptChecker)
    last_export: Path | None = None
    _exports: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.models.device != self.device:
            self.models = ModelCache(self.device)

    def export_folder(self) -> Path:
        from workbench.app.export import export_folder

        with self._lock:
            if self._exports is None:
                self._exports = export_folder(self.export_dir, self.results)
            return self._exports

    # live computations (each returns a job id; see workbench.app.jobs)

    def start_pattern(self, run: Any, spec: PromptSpec, layer: int, run_texts: list[str]) -> str:
        key = self.patterns.key(run, self.models.key(run), spec, layer)

        def work(progress: Any) -> str:
            if self.patterns.get(key) is not None:
                progress(1.0, "cached")
                return key
            live = self.models.get(run, progress)
            with using(live, progress) as model:
                ids = prompt_tokens(model, spec, run_texts, run)
                unknown = model.unknown_tokens(ids) if spec.source in ("text", "run") else None
                progress(0.12, f"recording {ids.shape[1]} tokens")
                entry = record_layer(model, ids, layer, progress)
            entry.warnings = list(live.warnings) + ([unknown] if unknown else [])
            self.patterns.put(key, entry)
            return key

        return self.jobs.submit("pattern", f"pattern|{key}", work)

    def start_atlas(self, model: str, families: list[str], n_prompts: Any, max_tokens: Any) -> str:
        """A new atlas run into this app's results folder, through `workbench.Atlas` (the same run
        `workbench atlas` makes); the job's result is the run id."""
        from workbench.atlas import Atlas

        if not (model or "").strip():
            raise InputDataError("no model given", "type a shipped name, a local folder or a cached hub id")
        if not families:
            raise InputDataError("no family chosen", "tick at least one family")
        try:
            n = None if n_prompts in (None, "") else int(n_prompts)
            m = None if max_tokens in (None, "") else int(max_tokens)
        except (TypeError, ValueError) as exc:
            raise InputDataError(f"prompts and max tokens must be whole numbers, got {n_prompts!r} and {max_tokens!r}") from exc

        def work(progress: Any) -> str:
            progress(0.01, f"loading {model.strip()}")
            atlas = Atlas(
                model.strip(),
                families,
                self.results,
                n_prompts=n,
                max_tokens=m,
                device=self.device,
                progress=JobProgress(progress),
            )
            return atlas.run().run_id

        return self.jobs.submit("atlas", f"atlas|{model}|{','.join(families)}|{n}|{m}", work)

    def start_playground(self, run: Any, heads: list[str], mode: AblationMode, prompt: str, top_k: Any, n_new: Any) -> str:
        from workbench.models.heads import parse_heads

        if not prompt.strip():
            raise InputDataError("the prompt is empty", "type a prompt first")
        parsed = parse_heads(heads, run.n_layers, run.n_heads)
        try:
            k, n = int(top_k or 10), int(n_new if n_new not in (None, "") else 12)
        except (TypeError, ValueError) as exc:
            raise InputDataError(f"top tokens and new tokens must be whole numbers, got {top_k!r} and {n_new!r}") from exc

        def work(progress: Any) -> dict[str, Any]:
            live = self.models.get(run, progress)
            with using(live, progress) as model:
                ids = prompt_tokens(model, PromptSpec("text", prompt), [])
                unknown = model.unknown_tokens(ids)
                result = run_ablation(model, ids, parsed, mode, k, n, progress)
            result["warnings"] = list(live.warnings) + ([unknown] if unknown else [])
            return result

        key = f"play|{run.run_id}|{','.join(map(str, parsed))}|{mode}|{hash(prompt)}|{k}|{n}"
        return self.jobs.submit("playground", key, work)


class JobProgress:
    """An atlas's progress hooks (`workbench.atlas.AtlasProgress`) as a dashboard job's progress bar."""

    def __init__(self, report: Any) -> None:
        self.report = report
        self.fraction = 0.0
        self.part = ""

    def started(self, run_id: str, message: str) -> None:
        self.report(0.02, f"run {run_id}: {message}")

    def on_part(self, family: str, part: str, done: int, total: int) -> None:
        self.fraction, self.part = done / max(total, 1), f"{family} part {part} ({done + 1}/{total})"
        self.report(self.fraction, self.part)

    def step(self, label: str, done: int, total: int) -> None:
        self.report(self.fraction, f"{self.part}: {label} {done}/{total}")

    def finished(self, result: Any) -> None:
        self.report(1.0, f"run {result.run_id} complete")


#: Modules the callbacks and jobs import lazily, imported once by `preload` before any thread starts.
#: pandas comes first: plotly's validators use it whenever it is in ``sys.modules``, so a job thread
#: that is still importing it (transformer_lens does) hands a half-built module to a page thread.
PRELOAD = (
    "pandas",
    "transformers",
    "transformer_lens.model_bridge",
    "workbench.models.model",
    "workbench.models.generate",
    "workbench.record",
    "workbench.interventions.ablation",
    "workbench.analysis.temporal",
    "workbench.families.prompts",
    "workbench.report.findings",
    "workbench.atlas",
)


def preload() -> list[str]:
    """Import what the pages and live jobs would otherwise import on first use, and draw one figure
    of every trace kind (plotly builds its classes lazily), before the server starts its threads.

    Two threads importing the same package at once can see it half initialised (Python breaks the
    import-lock cycle by handing one of them the partial module): the head page failed on first open
    with "partially initialized module 'pandas'". Returns the modules that could not be imported
    (optional ones; the page that needs them says so)."""
    import importlib

    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2)
    fig.add_trace(go.Heatmap(z=[[0.0, 1.0]], colorbar={"title": {"text": "x"}}), row=1, col=1)
    fig.add_trace(go.Bar(x=[0], y=[1.0], marker={"color": "#000"}), row=1, col=2)
    fig.add_trace(go.Scatter(x=[0], y=[1.0], mode="lines+markers", line={"width": 1}), row=1, col=2)
    fig.add_shape(type="rect", x0=0, x1=1, y0=0, y1=1, line={"width": 1})
    fig.add_annotation(text="x", x=0, y=0)
    fig.update_layout(title={"text": "x"}, xaxis={"title": {"text": "x"}}, yaxis={"title": {"text": "x"}}, coloraxis={})
    fig.to_plotly_json()
    return missing


def create_app(
    results: str | Path | None = None, *, device: str = "auto", export_dir: str | Path | None = None, refresh_ms: int = 2000
) -> Any:
    """The Dash app over a results folder (it need not exist yet: the pages say so and recover).

    Everything the pages import lazily is imported here first (`preload`), while only this thread runs."""
    import dash
    from flask import abort, send_from_directory

    from workbench.app import callbacks, layout
    from workbench.store import default_results

    missing = preload()
    if missing:
        log.info("dashboard: optional modules not importable: %s", ", ".join(missing))
    folder = Path(results).expanduser() if results is not None else default_results()
    state = AppState(
        folder.resolve() if folder.exists() else folder.absolute(),
        device=device,
        export_dir=Path(export_dir).expanduser() if export_dir else None,
        refresh_ms=refresh_ms,
    )
    # eager_loading: plotly.js comes with the page instead of when the first graph appears, so a
    # live pattern is drawn as soon as it arrives.
    app = dash.Dash(
        __name__,
        title="Attention Workbench",
        suppress_callback_exceptions=True,
        update_title=None,  # type: ignore[arg-type]  # dash documents None (keep the title); its annotation says str
        serve_locally=True,
        eager_loading=True,
    )
    app.index_string = layout.INDEX
    from workbench.app.data import current_signature

    app.layout = lambda: layout.shell(state.results, refresh_ms, current_signature(state.results))
    callbacks.register(app, state)

    @app.server.route("/exports/<path:name>")
    def exported(name: str) -> Any:
        folder = state.export_folder()
        if not (folder / name).is_file():
            abort(404)
        return send_from_directory(str(folder), name)

    app.workbench = state  # type: ignore[attr-defined]
    return app


def check_port(host: str, port: int) -> None:
    """Fail with a readable message when the port is taken or the host cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (98, 48):  # EADDRINUSE on Linux / macOS
                raise WorkbenchError(f"port {port} on {host} is already in use", "choose another with --port") from exc
            raise WorkbenchError(f"cannot listen on {host}:{port}: {exc.strerror}", "check --host and --port") from exc


def serve(
    results: str | Path | None,
    host: str = "127.0.0.1",
    port: int = 8050,
    device: str = "auto",
    export_dir: str | Path | None = None,
    quiet: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Check the port, build the app (imports included, see `preload`), call ``on_ready`` (the CLI
    prints the address there, once a browser can connect), then serve until interrupted."""
    check_port(host, port)
    app = create_app(results, device=device, export_dir=export_dir)
    if on_ready is not None:
        on_ready()
    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app.run(host=host, port=port, debug=False, threaded=True)
