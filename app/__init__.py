"""The Dash dashboard (installed as `workbench.app`).

Start it with ``workbench app [--results DIR] [--host 127.0.0.1] [--port 8050]``, or from Python::

    from workbench.app import create_app
    create_app("wb-results").run(port=8050)

Modules: `layout` (page builders), `callbacks` (wiring), `data` (store reads), `views` (store and live
results -> blocks), `blocks` (blocks -> Dash components), `export` (blocks -> standalone HTML),
`live` (the run's model, loaded once; patterns; the ablation playground), `jobs` (background work
with progress), `patterns` (downsampling for the browser), `figures` (app-only plotly figures).
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "serve"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    from workbench.app.server import create_app as make

    return make(*args, **kwargs)


def serve(*args: Any, **kwargs: Any) -> None:
    from workbench.app.server import serve as run

    run(*args, **kwargs)
