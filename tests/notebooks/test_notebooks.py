"""Notebooks are stored without outputs, so diffs stay readable.

The drafts in notebooks/drafts/ are not yet executed by the suite: they are verified against the
shipped organism before they move up to notebooks/ (issue: notebooks run in the test suite).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ALL_NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").rglob("*.ipynb"))


def test_there_are_notebooks():
    assert ALL_NOTEBOOKS


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name}: strip outputs"
