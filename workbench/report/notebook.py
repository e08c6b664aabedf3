"""`AtlasResult` in a notebook: its findings as a table, inline HTML, and the HTML report.

The atlas layer sits below the report layer (pyproject's import-linter contract), so `AtlasResult` cannot
import the findings or the report writer. This module, which may import the atlas, installs itself on
`AtlasResult` as its views when it is imported; ``from workbench import Atlas`` imports it, so a notebook
never has to. `AtlasResult.findings`, ``_repr_html_`` and `AtlasResult.report` call the functions here.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.atlas.api import AtlasResult
from workbench.report.findings import Findings, build_findings
from workbench.store.store import Store

if TYPE_CHECKING:
    import pandas as pd


def result_findings(result: AtlasResult) -> Findings:
    with Store.open(result.root) as store:
        return build_findings(store, result.run_id)


def findings_frame(result: AtlasResult) -> pd.DataFrame:
    """The role table of the report and of `workbench atlas`: one row per head a family claims (head,
    role, score, causal effect, n and p-value, verdict), confirmed heads first."""
    import pandas as pd

    found = result_findings(result)
    columns = [
        "head",
        "role",
        "score",
        "causal effect (baseline -> ablated, control mean ± spread)",
        "n, p-value (corrected)",
        "verdict",
    ]
    return pd.DataFrame(found.rows(), columns=columns)


def result_html(result: AtlasResult) -> str:
    """The run, its headlines, warnings (the run's and the findings'), and the role table, as one HTML block."""
    found = result_findings(result)
    status = result.status
    esc = html.escape
    parts = [
        '<div class="wb-atlas-result">',
        f"<b>Head atlas of {esc(result.model)}</b> · run <code>{esc(result.run_id)}</code> · status <b>{esc(status)}</b>"
        f" · families {esc(', '.join(result.families))}",
    ]
    if found.headlines:
        parts.append("<ul>" + "".join(f"<li>{esc(h)}</li>" for h in found.headlines) + "</ul>")
    warnings = list(dict.fromkeys([*result.warnings, *found.warnings]))
    if warnings:
        items = "".join(f"<li>{esc(w)}</li>" for w in warnings)
        parts.append(f'<div class="wb-warnings" style="color:#8a5300"><b>Warnings</b><ul>{items}</ul></div>')
    table = findings_frame(result)
    if len(table):
        parts.append(table.to_html(index=False, escape=True, classes="wb-role-table", border=0))
    else:
        parts.append("<p>No family claimed any head.</p>")
    parts.append("<p><small>result.findings() for this table, result.report(PATH) for the full report</small></p></div>")
    return "".join(parts)


def write_result_report(result: AtlasResult, path: str | Path | None = None) -> Path:
    """Write the run's HTML report (and its JSON beside it) as `workbench report` does; returns the HTML
    file. ``path``: a file ending in .html, a folder (report.html inside), or None (the run's folder)."""
    from workbench.report.html import write_report

    with Store.open(result.root) as store:
        html_path, _ = write_report(store, result.run_id, out=path)
    return html_path


AtlasResult.views = sys.modules[__name__]
