"""The run picker: every run in the store, newest first, with its progress."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.app import blocks as B
from workbench.app.data import run_rows

COLUMNS = ["run", "model", "status", "parts", "families", "heads", "started", "seconds"]


def runs_blocks(store: Any, results: Path) -> list[Any]:
    rows = run_rows(store)
    if not rows:
        return [
            B.Notice(
                f"No runs yet in {results}.",
                "info",
                hint=f"run `workbench atlas MODEL --results {results}`; this page updates by itself",
            )
        ]
    out: list[Any] = [B.Text(f"{len(rows)} run(s) in {results}. Click a run to open its head atlas.", muted=True)]
    running = [r for r in rows if r["status"] == "running"]
    if running:
        out.append(
            B.Notice(
                f"{len(running)} run(s) are being written right now; finished families appear as they "
                "complete (this page updates by itself).",
                "info",
            )
        )
    out.append(B.Table(rows, COLUMNS, name="runs", links={"run": "href"}))
    return out
