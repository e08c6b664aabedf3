"""`workbench compare RUN_A RUN_B`: how two runs differ (two models, seeds or revisions)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from workbench.cli.common import console


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.4g}"


def compare(
    run_a: str = typer.Argument(..., help="run id (or unique prefix) of run A"),
    run_b: str = typer.Argument(..., help="run id (or unique prefix) of run B"),
    results: Path = typer.Option(None, "--results", "-r", help="results folder of run A (and B)"),
    results_b: Path = typer.Option(None, "--results-b", help="results folder of run B, when it differs"),
    out: Path = typer.Option(None, "--out", "-o", help="folder for compare.html/compare.json, or a .html path"),
    top_k: int = typer.Option(10, "--top-k", min=1, help="top heads compared per metric"),
) -> None:
    """Report per-family, per-metric differences between two runs (HTML + JSON), and print a summary."""
    from workbench.report.compare import write_compare
    from workbench.store import Store

    with Store.open(results) as store_a:
        store_b = Store.open(results_b) if results_b is not None else store_a
        try:
            html_path, json_path, data = write_compare(store_a, run_a, store_b, run_b, out, top_k)
        finally:
            if store_b is not store_a:
                store_b.close()
    table = Table(title=f"A = {data['a']['run_id']} ({data['a']['model']})   B = {data['b']['run_id']} ({data['b']['model']})")
    for col in ("family", "metric", "max |B-A|", "pearson", "spearman", f"top-{top_k} jaccard"):
        table.add_column(col)
    for fam in data["families"]:
        for m in fam["metrics"]:
            table.add_row(
                fam["name"],
                m["metric"],
                _f(m.get("max_abs_diff")),
                _f(m.get("pearson")),
                _f(m.get("spearman")),
                _f(m.get("top_k_jaccard")),
            )
    console.print(table)
    if not data["same_geometry"]:
        console.print("different head geometry: compared by relative depth and top heads (see the HTML)")
    console.print(f"compare report: {html_path}\nsummary: {json_path}", highlight=False, soft_wrap=True)
