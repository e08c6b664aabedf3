"""`workbench runs`: list the runs in a results folder (newest first)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.markup import escape
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


#: The table's columns in display order; run ids and model names are never wrapped nor cut.
_COLUMNS = ("run", "model", "families", "status", "parts", "started", "time")
#: Less useful columns are dropped (in this order) to fit the console; the run id holds the start time.
_DROP_ORDER = ("started", "time", "families", "parts")
_GAP = 3  # between two columns: padding, separator, padding (box.SIMPLE_HEAD without edges)


def _model_name(model: str) -> str:
    return Path(model).name if model.startswith("/") else model  # folders: the full path is in --json


def _row(run: Any) -> dict[str, str]:
    return {
        "run": run.run_id,
        "model": _model_name(run.model),
        "families": ", ".join(run.families),
        "status": run.status,
        "parts": f"{run.parts_done}/{run.parts_total}",
        "started": _when(run.created_at),
        "time": _duration(run),
    }


def _min_width(column: str, rows: list[dict[str, str]], stacked: bool) -> int:
    """Narrowest the column can be: families may fold between families, other cells stay on one line."""
    if column == "families":
        return max([len(column), *(len(w) for row in rows for w in row[column].split())])
    if column == "run" and stacked:  # the run id over its model (indented by 2)
        return max([len("run / model"), *(max(len(row["run"]), 2 + len(row["model"])) for row in rows)])
    return max([len(column), *(len(row[column]) for row in rows)])


def _layouts() -> list[tuple[bool, list[str]]]:
    """Candidate layouts, best first: (model stacked under the run id, columns)."""
    out = []
    for stacked in (False, True):
        columns = [c for c in _COLUMNS if not (stacked and c == "model")]
        out.append((stacked, list(columns)))
        for drop in _DROP_ORDER[: 2 if not stacked else None]:  # a model column is worth more than families, parts
            columns.remove(drop)
            out.append((stacked, list(columns)))
    return out


def _fitting_layout(rows: list[dict[str, str]], width: int) -> tuple[bool, list[str]] | None:
    """The first layout whose table fits ``width``; None when none does."""
    for stacked, columns in _layouts():
        need = sum(_min_width(c, rows, stacked) for c in columns) + _GAP * (len(columns) - 1)
        if need <= width:
            return stacked, columns
    return None


def _status(status: str) -> str:
    return f"[{_STYLE.get(status, 'white')}]{escape(status)}[/]"


def _print_blocks(rows: list[dict[str, str]], width: int) -> None:
    """Very narrow consoles: a few lines per run, never breaking a run id, a model name or a field."""
    for row in rows:
        console.print(escape(row["run"]), highlight=False, soft_wrap=True)
        console.print(f"  model {escape(row['model'])}", highlight=False, soft_wrap=True)
        parts = f"{row['parts']} parts"
        items = [(row["status"], _status(row["status"])), (parts, parts)]
        items += [(row[c], escape(row[c])) for c in ("families", "started", "time") if row[c]]
        line: list[str] = []
        used = 2
        for plain, markup in items:
            if line and used + 3 + len(plain) > width:
                console.print("  " + " · ".join(line), highlight=False, soft_wrap=True)
                line, used = [], 2
            used += (3 if line else 0) + len(plain)
            line.append(markup)
        console.print("  " + " · ".join(line), highlight=False, soft_wrap=True)


def _print_runs(found: list[Any], root: Path) -> None:
    """A table that fits the console: columns are dropped, then the model goes under its run id,
    rather than wrapping a run id or a model name; on a very narrow console, a few lines per run."""
    rows = [_row(r) for r in found]
    width = console.width
    layout = _fitting_layout(rows, width)
    if layout is None:
        console.print(f"runs in {escape(str(root))}", highlight=False)
        _print_blocks(rows, width)
        return
    stacked, columns = layout
    table = Table(title=f"runs in {escape(str(root))}", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for column in columns:
        header = "run / [dim]model[/]" if column == "run" and stacked else column
        folds = column == "families"  # between families; every other cell stays on one line
        table.add_column(
            header, min_width=_min_width(column, rows, stacked), no_wrap=not folds, overflow="fold" if folds else "ellipsis"
        )
    for row in rows:
        cells = {c: escape(v) for c, v in row.items()}
        cells["status"] = _status(row["status"])
        if stacked:
            cells["run"] += f"\n  [dim]{escape(row['model'])}[/]"
        table.add_row(*(cells[c] for c in columns))
    console.print(table, highlight=False)


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
        _print_runs(found, store.root)
        stuck = [r for r in found if r.status in ("interrupted", "failed")]
        if stuck:
            console.print(
                f"resume with: workbench atlas --resume {stuck[0].run_id} --results {store.root}", highlight=False, soft_wrap=True
            )
