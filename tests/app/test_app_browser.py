"""Acceptance 1: the dashboard in headless Chromium on a store made by the real atlas runner.

Open the run picker, open a run, click a heatmap cell, check the head page shows that head's
numbers (exactly the store's), draw its pattern and token view, export the view, run the ablation
playground, compare two runs; screenshots of each step go to $WB_SCREENSHOT_DIR (or a temp folder).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import (
    click_heatmap_cell,
    element,
    figure_drawn,
    running_app,
    screenshot,
    text_of,
    text_present,
    wait_for,
)
from selenium.webdriver.common.keys import Keys

from workbench.store import Store

pytestmark = pytest.mark.slow


def cell_values(driver, table_id: str) -> dict[tuple[str, str], str]:
    """(family, metric) -> the exact value (data-value) of the head-scores table."""
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('#' + arguments[0] + ' tbody tr')).map(function (tr) {"
        " var td = tr.querySelectorAll('td'); return [td[0].textContent, td[1].textContent,"
        " td[2].getAttribute('data-value'), td[2].textContent]; });",
        table_id,
    )
    return {(f, m): (exact if exact is not None else shown) for f, m, exact, shown in rows}


def test_browse_click_head_pattern_export_playground(atlas_results, browser, shots, tiny_llama):
    results, run_a, run_b = atlas_results
    d = browser
    with running_app(results) as (base, app):
        # 1. the run picker lists both runs
        d.get(base + "/")
        wait_for(d, text_present(d, "#table-runs", run_b), 60, "the runs table")
        assert run_a in text_of(d, "#table-runs") and "complete" in text_of(d, "#table-runs")
        screenshot(d, shots, "01-runs")

        # 2. open run A: one heatmap per family
        d.find_element("link text", run_a).click()
        wait_for(d, lambda x: x.current_url.endswith(f"/run/{run_a}"), 20, "the atlas url")
        sinks_graph = '[id*=\'"family":"sinks"\']'
        wait_for(
            d,
            lambda x: x.execute_script(
                f"var g = document.querySelector(`{sinks_graph} .js-plotly-plot`); return !!(g && g._fullLayout);"
            ),
            30,
            "the sinks heatmap",
        )
        wait_for(d, element("#section-family-temporal .js-plotly-plot"), 30, "the temporal heatmap")
        screenshot(d, shots, "02-atlas")

        # 3. click the cell of L1H2 in the sinks heatmap -> the head page
        click_heatmap_cell(d, sinks_graph, 2, 1)
        wait_for(d, lambda x: x.current_url.endswith(f"/run/{run_a}/head/L1H2"), 20, "navigation to L1H2")
        wait_for(d, element("#table-head-scores"), 30, "the head's score table")
        assert text_of(d, "#page-title").startswith("L1H2")
        shown = cell_values(d, "table-head-scores")
        with Store.open(results) as store:
            scores = store.scores(run_a)
        assert {f for f, _ in shown} == {"sinks", "temporal"}
        for fam, hs in scores.items():
            for metric, values in hs.metrics.items():
                want = float(values[1, 2])
                got = shown[(fam, metric)]
                assert (got == "–" and math.isnan(want)) or float(got) == want, (fam, metric, got, want)
        wait_for(d, element("#table-temporal-class"), 10, "the temporal class")
        wait_for(d, figure_drawn("graph-spectrum"), 20, "the spectral plot")
        assert "L1H2" in text_of(d, "#section-evidence")
        screenshot(d, shots, "03-head")

        # 4. the pattern of L1H2 on the run's first prompt (short: the full pattern) and the token view
        d.find_element("id", "pattern-show").click()
        wait_for(d, figure_drawn("pattern-graph"), 120, "the pattern")
        n_tokens = int(tiny_llama.to_tokens(Path(results.parent / "app-prompts.txt").read_text().splitlines()[0]).shape[1])
        info = text_of(d, "#pattern-output")
        assert f"{n_tokens} tokens" in info and "full pattern" in info
        rows, cols = d.execute_script(
            "var g = document.querySelector('#pattern-graph .js-plotly-plot'); var z = g.calcdata[0][0].z;"
            "return [z.length, z[0].length];"
        )
        assert (rows, cols) == (n_tokens, n_tokens)
        wait_for(d, element("#tokens-view"), 20, "the token view")
        spans = d.find_elements("css selector", "#tokens-view span.tok")
        assert len(spans) == n_tokens and "tok-query" in spans[-1].get_attribute("class")
        d.execute_script("document.getElementById('section-pattern').scrollIntoView()")
        screenshot(d, shots, "04-pattern")

        # 5. export the head view: a standalone HTML file with the head's numbers and its pattern
        d.find_element("id", "export-head").click()
        link = wait_for(d, element("#export-head-link"), 60, "the export link")
        path = app.workbench.last_export
        assert path is not None and path.name == link.text and path.is_file()
        html = path.read_text()
        assert "Plotly" in html and not re.search(r"<script[^>]+src=", html)
        assert f'data-value="{float(scores["sinks"].metrics["first_token_mass"][1, 2])!r}"' in html
        assert "Attention pattern" in html and "Token view" in html

        # 6. the ablation playground, from the head page's link (L1H2 preselected)
        d.find_element("id", "link-ablate").click()
        wait_for(d, element("#play-prompt"), 30, "the playground")
        prompt = "w1 w2 w3 w4 w5 w6 w7"
        box = d.find_element("id", "play-prompt")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.DELETE)  # (clear() bypasses React: Dash would keep the old text)
        box.send_keys(prompt)
        assert box.get_attribute("value") == prompt
        d.find_element("id", "play-run").click()
        wait_for(d, element("#table-play-tokens"), 120, "the playground result")
        summary = text_of(d, "#table-play-summary")
        assert "KL" in summary
        ids = tiny_llama.to_tokens(prompt)
        probs = torch.softmax(tiny_llama.logits(ids)[0, -1].double(), -1).numpy()
        first = d.execute_script(
            "var td = document.querySelectorAll('#table-play-tokens tbody tr')[0].querySelectorAll('td');"
            "return [td[1].getAttribute('data-value'), td[2].getAttribute('data-value'), td[3].getAttribute('data-value')];"
        )
        token_id, p_without, p_with = int(first[0]), float(first[1]), float(first[2])
        assert token_id == int(np.argmax(probs)) and p_without == pytest.approx(float(probs[token_id]), abs=1e-9)
        from workbench.interventions.ablation import ablate_heads

        with ablate_heads(tiny_llama, ["L1H2"], mode="uniform"):  # the playground's default (the atlas's mode)
            ablated = torch.softmax(tiny_llama.logits(ids)[0, -1].double(), -1).numpy()
        assert p_with == pytest.approx(float(ablated[token_id]), abs=1e-9)
        out = text_of(d, "#play-output")
        assert "without ablation" in out and "with ablation" in out and "L1H2" in out
        screenshot(d, shots, "05-playground")

        # 7. compare the two runs: the difference heatmap is B - A of the store's values
        d.get(base + f"/compare?a={run_a}&b={run_b}&family=sinks&metric=first_token_mass")
        wait_for(d, figure_drawn("graph-compare-diff"), 30, "the difference heatmap")
        z = d.execute_script("return document.querySelector('#graph-compare-diff .js-plotly-plot').calcdata[0][0].z;")
        with Store.open(results) as store:
            va = store.scores(run_a)["sinks"].metrics["first_token_mass"]
            vb = store.scores(run_b)["sinks"].metrics["first_token_mass"]
        np.testing.assert_allclose(np.array(z, dtype=float), vb - va, rtol=1e-12)
        screenshot(d, shots, "06-compare")
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]
        assert not errors, errors
