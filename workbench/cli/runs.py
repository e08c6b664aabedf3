"""`workbench runs`: list the runs in a results folder (newest first)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.table import Table

from workbench.cli.common import console

_STYLE = {"complete": "green", "running": "cyan", "interrupted": "yellow", "failed": "red"}


def _when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%m-%d %H:%M", time.localtime(ts))


def _duration(run) -> str:
    end = run.finished_at or run.heartbeat_at
    if run.started_at is None or end is None:
        return ""
    return f"{end - run.started_at:.1f} s"


def runs(
    results: Path = typer.Option(None, "--results", "-r", help="results folder (default ./wb-results or $WORKBENCH_RESULTS)"),
    model: str = typer.Option(None, "--model", help="only runs of this model spec"),
    status: str = typer.Option(None, "--status", help="only runs with this status: complete, running, interrupted, failed"),
    as_json: bool = typer.Option(False, "--json", help="print the runs as JSON"),
) -> None:
    """List the runs in the results store; an interrupted run says how to resume it."""
    from workbench.errors import WorkbenchError
    from workbench.store import Store

    if status is not None and status not in ("complete", "running", "interrupted", "failed"):
        raise WorkbenchError(f"unknown status {status!r}", "use complete, running, interrupted or failed")
    with Store.open(results) as store:
        found = store.runs(model=model, status=status)
        if as_json:
            keep = (
                "run_id",
                "model",
                "model_kind",
                "model_revision",
                "model_hash",
                "families",
                "status",
                "stored_status",
                "created_at",
                "started_at",
                "finished_at",
                "parts_done",
                "parts_total",
                "resumes",
                "error",
                "config",
                "versions",
            )
            print(json.dumps([{k: r.to_dict()[k] for k in keep} for r in found], indent=2))
            return
        if not found:
            console.print(f"no runs in {store.root}")
            return
        table = Table(title=f"runs in {store.root}")
        table.add_column("run", no_wrap=True, min_width=max(len(r.run_id) for r in found))
        table.add_column("model", overflow="fold")
        table.add_column("families", overflow="fold")
        for col in ("status", "parts"):
            table.add_column(col, no_wrap=True)
        table.add_column("started")
        table.add_column("time")
        for r in found:
            model_name = Path(r.model).name if r.model.startswith("/") else r.model  # folders: the full path is in --json
            table.add_row(
                r.run_id,
                model_name,
                ", ".join(r.families),
                f"[{_STYLE.get(r.status, 'white')}]{r.status}[/]",
                f"{r.parts_done}/{r.parts_total}",
                _when(r.created_at),
                _duration(r),
            )
        console.print(table)
        stuck = [r for r in found if r.status in ("interrupted", "failed")]
        if stuck:
            console.print(
                f"resume with: workbench atlas --resume {stuck[0].run_id} --results {store.root}", highlight=False, soft_wrap=True
            )
