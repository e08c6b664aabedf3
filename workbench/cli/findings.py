"""The findings summary at the end of `workbench atlas` (the same findings as the report's top)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from workbench.cli.common import console
from workbench.report.findings import CONFIRMED, NOT_CONFIRMED, Findings, build_findings
from workbench.store import Store

#: heads listed in the terminal (confirmed first); the report lists every one
MAX_HEADS = 10
SHORT_VERDICT = {CONFIRMED: "[green]confirmed[/]", NOT_CONFIRMED: "not confirmed"}


def load_findings(results: Path, run_id: str) -> Findings:
    with Store.open(results) as store:
        return build_findings(store, run_id)


def print_findings(found: Findings) -> None:
    """Headlines, warnings, then one row per head and role with its causal check, n and p-values,
    narrow enough for 80 columns (the check folds inside its cell; a head label never breaks)."""
    console.print("[bold]Findings[/]", highlight=False)
    for line in found.headlines:  # the findings' own text is never rich markup
        console.print(f"  {escape(line)}", highlight=False)
    for warning in found.warnings:
        console.print(f"  [yellow]warning:[/] {escape(warning)}", highlight=False)
    if not found.heads:
        return
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("head", no_wrap=True)
    table.add_column("role", overflow="fold")
    table.add_column("causal check: baseline -> ablated (control mean ± spread)", overflow="fold", ratio=1)
    table.add_column("n, p (corrected)", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    for f in found.heads[:MAX_HEADS]:
        roles_with_evidence = {e.role for e in f.evidence}
        for i, e in enumerate(f.evidence):
            check = e.text() if e.ablated is not None else e.effect()
            stats = e.statistics()
            table.add_row(
                f.head if i == 0 else "", escape(e.role), escape(check), stats, SHORT_VERDICT.get(e.verdict, "no check")
            )
        for role in [r for r in f.roles if r not in roles_with_evidence]:
            table.add_row(f.head if not f.evidence and role == f.roles[0] else "", role, "-", "-", "")
    console.print(table)
    if len(found.heads) > MAX_HEADS:
        console.print(f"  ... and {len(found.heads) - MAX_HEADS} more heads in the report", highlight=False)
