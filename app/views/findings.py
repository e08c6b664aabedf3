"""The run page's first section: what each head does and how sure we are (`workbench.report.findings`)."""

from __future__ import annotations

from typing import Any

from workbench.app import blocks as B
from workbench.report.findings import build_findings


def findings_blocks(store: Any, run_id: str) -> list[Any]:
    """Headlines, warnings and the head role table, each head linking to its page."""
    found = build_findings(store, run_id)
    inner: list[Any] = [B.Text(line) for line in found.headlines]
    inner += [B.Notice(w, "warn") for w in found.warnings]
    rows = found.rows()
    for row in rows:
        row["href"] = f"/run/{run_id}/head/{row['head']}"
    if rows:
        inner.append(B.Table(rows, [c for c in rows[0] if c != "href"], name="role-table", links={"head": "href"}))
    else:
        inner.append(B.Text("No family claimed any head.", muted=True))
    return [B.Section("Findings", inner, name="findings")]
