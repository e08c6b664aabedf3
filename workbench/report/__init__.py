"""Reports from the store: plotly figure builders, a self-contained HTML report, a JSON summary."""

from workbench.report.data import collect
from workbench.report.html import render_report, write_report

__all__ = ["collect", "render_report", "write_report"]
