"""`AtlasResult` in a notebook: `_repr_html_` (findings and warnings), `.findings()` (the role table as a
DataFrame) and `.report(path)` (the HTML report of `workbench report`)."""

from __future__ import annotations

import html

import pytest

from workbench import Atlas, AtlasResult
from workbench.store.store import Store

ROLE_COLUMNS = [
    "head",
    "role",
    "score",
    "causal effect (baseline -> ablated, control mean ± spread)",
    "n, p-value (corrected)",
    "verdict",
]


@pytest.fixture(scope="module")
def result(tiny_model_dir, tmp_path_factory) -> AtlasResult:
    from workbench.models import load_model

    model = load_model(tiny_model_dir("llama", peaked=True), device="cpu")  # peaked rows: sink heads get claimed
    store = tmp_path_factory.mktemp("display")
    return Atlas(
        model, families=["sinks", "temporal"], store=store, n_prompts=1, max_tokens=32, options={"sinks": {"act": False}}
    ).run()


def _findings(result: AtlasResult):
    from workbench.report.findings import build_findings

    with Store.open(result.root) as store:
        return build_findings(store, result.run_id)


def test_findings_is_the_role_table(result):
    table = result.findings()
    found = _findings(result)
    assert list(table.columns) == ROLE_COLUMNS
    assert len(table) == len(found.heads) > 0  # the tiny model's sink heads at least
    assert list(table["head"]) == [h.head for h in found.heads]
    assert set(table["head"]) <= {f"L{layer}H{head}" for layer in range(2) for head in range(4)}


def test_repr_html_shows_findings_and_warnings(result):
    page = result._repr_html_()
    found = _findings(result)
    assert result.run_id in page and "<table" in page and "wb-role-table" in page
    for head in found.heads:
        assert f"<td>{head.head}</td>" in page
    for line in found.headlines:
        assert html.escape(line) in page
    # not every family ran, so the findings warn; the warnings are shown
    assert found.warnings and "Warnings" in page
    assert all(html.escape(w) in page for w in found.warnings)


def test_report_writes_the_html_report(result, tmp_path):
    out = result.report(tmp_path / "atlas.html")
    assert out == tmp_path / "atlas.html" and out.is_file()
    text = out.read_text(encoding="utf-8")
    assert result.run_id in text and 'id="role-table"' in text
    folder = result.report(tmp_path / "reports")
    assert folder == tmp_path / "reports" / "report.html" and result.run_id in folder.read_text(encoding="utf-8")
