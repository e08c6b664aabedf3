"""`workbench report RUN`: a self-contained HTML report (opens offline) and a JSON summary."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli.common import console


def report(
    run: str = typer.Argument("latest", help="run id, unique id prefix, or 'latest'"),
    results: Path = typer.Option(None, "--results", "-r", help="results folder (default ./wb-results or $WORKBENCH_RESULTS)"),
    out: Path = typer.Option(
        None, "--out", "-o", help="folder for report.html/report.json, or a .html path (default: the run's folder)"
    ),
    top_k: int = typer.Option(10, "--top-k", min=1, help="top heads listed per family"),
) -> None:
    """Write report.html (plotly inlined, no network needed) and report.json for a run."""
    from workbench.report.html import write_report
    from workbench.store import Store

    with Store.open(results) as store:
        html_path, json_path = write_report(store, run, out, top_k=top_k)
    console.print(
        f"report: {html_path}\nsummary: {json_path}\nopen it with any browser, e.g. file://{html_path.resolve()}",
        highlight=False,
        soft_wrap=True,
    )
