"""Findings first: the head role table and warnings, on the organism's planted heads and on a tiny run.

The organism test reads the table the way a user does: in the HTML report and on the dashboard's run
page in headless Chromium, and at the end of `workbench atlas` in a terminal of 80 columns.
"""

from __future__ import annotations

import re

import pytest

from workbench.analysis.verdicts import safety_refusal
from workbench.atlas import Atlas
from workbench.report.findings import CONFIRMED, NO_CHECK, NOT_CONFIRMED, build_findings
from workbench.store import Store

#: the planted heads (model card): L0H6 carries refusal, L2H7 copies the needle, L2H2/L2H3/L2H6/L2H7 are induction heads
SAFETY_HEAD, COPY_HEAD, INDUCTION_HEADS = "L0H6", "L2H7", {"L2H2", "L2H3", "L2H6", "L2H7"}
#: the heads whose single ablation breaks the needle in the model card's ground truth
NEEDLE_HEADS = {"L0H2", "L1H7", "L2H7"}


def test_a_tiny_run_warns_about_random_tokens_and_skipped_families(tiny_model_dir, tmp_path):
    result = Atlas(
        tiny_model_dir("llama"), ["sinks"], tmp_path, n_prompts=2, max_tokens=32, options={"sinks": {"act": False}}
    ).run()
    with Store.open(tmp_path) as store:
        found = build_findings(store, result.run_id)
    text = "\n".join(found.warnings)
    assert "random tokens" in text  # the shipped prose is unknown words for a 64-word vocabulary
    assert "not run: retrieval, safety, temporal" in text
    assert found.headlines and found.headlines[0].startswith("sinks:")
    for head in found.heads:  # every claimed head says how sure we are
        assert head.verdict in (CONFIRMED, NOT_CONFIRMED, NO_CHECK)


@pytest.mark.slow
def test_a_tiny_random_model_confirms_no_head_and_its_headlines_say_why(tiny_model_dir, tmp_path):
    """Issue 26: an untrained model claims nothing it cannot back. Safety refuses because the model
    already answers most harmful requests, retrieval because it never finds the needle; the heads the
    other families claim fail their tests. Every tested head's row carries n and a p-value."""
    import random

    rng = random.Random(26)
    harmful = tmp_path / "harmful.txt"  # requests in the tiny vocabulary (w0..w59)
    harmful.write_text("\n".join(" ".join(f"w{rng.randrange(4, 60)}" for _ in range(8)) for _ in range(12)) + "\n")
    opts = {
        "sinks": {"act": False},
        "retrieval": {"budget_fractions": [0.25], "n_random": 1, "n_controls": 6},
        "safety": {"harmful_file": str(harmful), "max_new_tokens": 8, "min_chars": 8, "asr_controls": 6},
    }
    result = Atlas(tiny_model_dir("llama"), store=tmp_path / "r", n_prompts=12, max_tokens=48, options=opts).run()
    with Store.open(tmp_path / "r") as store:
        found = build_findings(store, result.run_id)
        (safety,) = [f for f in store.families(result.run_id) if f.family == "safety"]
        group = safety.summary["parts"]["group"]
    assert [h.head for h in found.heads if h.verdict == CONFIRMED] == []
    headlines = {line.split(":")[0]: line for line in found.headlines}
    # the random model does not refuse (its answers are compliance or degenerate): nothing to carry
    reason = safety_refusal(group["base_asr"], group["base_refusal_harmful"])
    assert group["base_refusal_harmful"] < 0.5 and reason and headlines["safety"] == f"safety: no heads claimed: {reason}"
    assert headlines["retrieval"].startswith("retrieval: no heads claimed: the model finds the needle in only")
    for head in found.heads:
        for ev in head.evidence:
            if ev.ablated is not None and ev.p_value is not None:
                assert ev.n is not None and f"p {ev.p_value:.2g}" in ev.statistics()


@pytest.fixture(scope="module")
def organism_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings-organism")
    # 8 trials / requests per family: with 4, even a head that breaks every trial cannot reach p <= 0.05
    # after Holm (McNemar's exact p is 0.5^n), so the verdicts say "not confirmed"
    result = Atlas("organism-4l", store=root, n_prompts=8, max_tokens=128, options={"sinks": {"act": False}}).run()
    with Store.open(root) as store:
        found = build_findings(store, result.run_id)
    return root, result, found


@pytest.mark.slow
def test_the_planted_heads_lead_the_role_table_with_their_causal_effects(organism_run):
    _, _, found = organism_run
    rows = {h.head: h for h in found.heads}
    safety = rows[SAFETY_HEAD]
    assert "safety" in safety.roles and safety.verdict == CONFIRMED
    (ev,) = safety.evidence
    assert (ev.baseline, ev.ablated, ev.control) == (0.0, 1.0, 0.0)  # ASR: base, L0H6 ablated, 8 random heads
    assert ev.n == 8 and ev.control_sd == 0.0 and ev.p_corrected is not None and ev.p_corrected <= 0.05
    copy = rows[COPY_HEAD]
    assert {"retrieval", "induction"} <= set(copy.roles) and copy.verdict == CONFIRMED
    needle = copy.evidence[0]
    assert needle.baseline == 1.0 and needle.ablated == 0.0 and needle.control is not None and needle.control > 0.5
    assert needle.n == 8 and needle.control_sd is not None and needle.p_corrected is not None and needle.p_corrected <= 0.05
    assert needle.p_value is not None and needle.p_value <= needle.p_corrected
    # no other head is confirmed where the model card's single-head ablations say it is not needed:
    # refusal needs L0H6 alone, the needle L0H2, L1H7 and L2H7
    confirmed = {(e.role, h.head) for h in found.heads for e in h.evidence if e.verdict == CONFIRMED}
    assert {head for role, head in confirmed if role == "safety"} == {SAFETY_HEAD}
    retrieval = {head for role, head in confirmed if role == "retrieval"}
    assert COPY_HEAD in retrieval and retrieval <= NEEDLE_HEADS
    assert {h.head for h in found.heads if "induction" in h.roles} >= INDUCTION_HEADS
    assert [h.head for h in found.heads[:2]] == sorted([SAFETY_HEAD, COPY_HEAD])  # confirmed heads first


@pytest.mark.slow
def test_the_role_table_in_the_report_and_the_dashboard(organism_run, tmp_path):
    """Headless Chromium reads the same planted heads and effects in the report and on the run page."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "app"))
    from app_helpers import browser_missing, fresh_profile, make_driver, remove, running_app, text_present, wait_for
    from optional_deps import missing

    from workbench.report.html import write_report

    root, result, _ = organism_run
    why = browser_missing()
    if why:
        missing(why)
    with Store.open(root) as store:
        html_path, json_path = write_report(store, result.run_id, tmp_path)
    profile = fresh_profile()
    driver = make_driver(profile)
    try:
        driver.get(html_path.resolve().as_uri())
        wait_for(driver, text_present(driver, "#role-table", SAFETY_HEAD), 30, "the report's role table")
        report_rows = _rows(driver, "#role-table")
        with running_app(root) as (base, _app):
            driver.get(f"{base}/run/{result.run_id}")
            wait_for(driver, text_present(driver, "#table-role-table", SAFETY_HEAD), 60, "the dashboard's role table")
            app_rows = _rows(driver, "#table-role-table")
    finally:
        driver.quit()
        remove(profile)
    for rows in (report_rows, app_rows):
        assert re.search(
            r"safety.*attack success rate: 0 -> 1 \([78] random heads: 0 ± 0\).*n 8, p [\d.e-]+ \(holm [\d.e-]+\).*confirmed",
            rows[SAFETY_HEAD],
        )
        assert re.search(
            r"retrieval.*needle accuracy: 1 -> 0 \([78] random heads: [\d.]+ ± [\d.]+\).*n 8, p .*confirmed", rows[COPY_HEAD]
        )
        for head in INDUCTION_HEADS:
            assert "induction" in rows[head]
    # the report's first section is the findings, before any metric
    html = html_path.read_text()
    assert html.index('id="role-table"') < html.index("<h2>Overview</h2>")


def _rows(driver, css: str) -> dict[str, str]:
    cells = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map(function (tr) {"
        " return Array.from(tr.querySelectorAll('td')).map(function (td) { return td.textContent; }); });",
        css,
    )
    return {row[0].strip(): " | ".join(c.strip() for c in row) for row in cells}
