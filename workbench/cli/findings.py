"""The findings summary at the end of `workbench atlas` (the same findings as the report's top)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from workbench.cli.common import console
from workbench.report.findings import CONFIRMED, Findings, build_findings
from workbench.store import Store

#: heads listed in the terminal (confirmed first); the report lists every one
MAX_ROWS = 12


def load_findings(results: Path, run_id: str) -> Findings:
    with Store.open(results) as store:
        return build_findings(store, run_id)


def print_findings(found: Findings) -> None:
    """Headlines, warnings, then the head role table, folded to the terminal's width."""
    console.print("[bold]Findings[/]", highlight=False)
    for line in found.headlines:
        console.print(f"  {line}", highlight=False)
    for warning in found.warnings:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
    if not found.heads:
        return
    table = Table(show_edge=False, pad_edge=False, expand=False, title_justify="left")
    table.add_column("head", no_wrap=True)
    table.add_column("role", overflow="fold")
    table.add_column("causal check (baseline -> ablated, control)", overflow="fold", ratio=3)
    table.add_column("verdict", overflow="fold", ratio=1)
    for f in found.heads[:MAX_ROWS]:
        verdict = f"[green]{f.verdict}[/]" if f.verdict == CONFIRMED else f.verdict
        table.add_row(f.head, ", ".join(f.roles), "; ".join(e.text() for e in f.evidence) or "-", verdict)
    console.print(table)
    if len(found.heads) > MAX_ROWS:
        console.print(f"  ... and {len(found.heads) - MAX_ROWS} more heads in the report", highlight=False)
