"""Acceptance 3: a store being written by a running `workbench atlas` can be browsed at the same
time, and a missing or corrupt store gives a readable page, not a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from app_helpers import (
    click_heatmap_cell,
    element,
    running_app,
    screenshot,
    text_of,
    text_present,
    wait_for,
    write_run,
)
from atlas_helpers import SECONDS_ENV, subprocess_env

from workbench.store import Store


def page_text(driver) -> str:
    return text_of(driver, "body")


def assert_readable(driver, *needles: str) -> None:
    text = page_text(driver)
    for needle in needles:
        assert needle in text, f"{needle!r} not on the page:\n{text[:2000]}"
    for bad in ("Traceback", "Error loading", "Callback error", "Internal Server Error"):
        assert bad not in text, f"{bad!r} on the page:\n{text[:2000]}"


def test_missing_store_then_created(browser, shots, tmp_path, tiny_model_dir):
    d = browser
    missing = tmp_path / "not-yet"
    with running_app(missing) as (base, _):
        d.get(base + "/")
        wait_for(d, text_present(d, ".notice-error", "does not exist"), 30, "the missing-store notice")
        assert_readable(d, str(missing), "workbench atlas")
        screenshot(d, shots, "10-missing-store")
        d.get(base + "/run/whatever/head/L0H0")
        wait_for(d, element(".notice-error"), 30, "a notice on the head page")
        assert_readable(d, "does not exist")
        d.get(base + "/compare")
        wait_for(d, element(".notice-error"), 30, "a notice on the compare page")
        # the store appears (an atlas run starts writing it): the open page updates by itself
        d.get(base + "/")
        wait_for(d, element(".notice-error"), 30, "the missing-store notice again")
        rid = write_run(missing, tiny_model_dir("llama"), 2, 4, temporal=False, run_id="run-late")
        wait_for(d, text_present(d, "#table-runs", rid), 30, "the runs table without a reload")
        d.get(base + "/run/nope")
        wait_for(d, element(".notice-error"), 30, "the unknown-run notice")
        assert_readable(d, "no run 'nope'")
        d.get(base + f"/run/{rid}/head/L9H0")
        wait_for(d, element(".notice-error"), 30, "the bad-head notice")
        assert_readable(d, "out of range")


def test_corrupt_store(browser, shots, tmp_path):
    d = browser
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "workbench.sqlite").write_bytes(b"definitely not sqlite " * 400)
    with running_app(corrupt) as (base, _):
        for path in ("/", "/run/abc", "/run/abc/head/L0H0", "/run/abc/playground", "/compare"):
            d.get(base + path)
            wait_for(d, element(".notice-error"), 30, f"the corrupt-store notice on {path}")
            assert_readable(d, "not a database")
        screenshot(d, shots, "11-corrupt-store")


@pytest.mark.slow
def test_browse_while_atlas_writes(browser, shots, tmp_path, tiny_model_dir):
    d = browser
    results = tmp_path / "live-results"
    cmd = [
        sys.executable,
        "-m",
        "workbench",
        "atlas",
        str(tiny_model_dir("llama")),
        "--results",
        str(results),
        "--families",
        "sinks,countdown",
        "--max-tokens",
        "24",
        "--n-prompts",
        "2",
        "--quiet",
        "--set",
        "sinks.evidence_heads=1",
    ]
    with running_app(results) as (base, _):
        d.get(base + "/")
        wait_for(d, text_present(d, ".notice-error", "does not exist"), 30, "the missing-store notice")
        proc = subprocess.Popen(
            cmd, env=subprocess_env(**{SECONDS_ENV: "3"}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            # the run shows up while it is written, without a reload
            wait_for(d, text_present(d, "#table-runs", "running"), 90, "the running run in the table")
            with Store.open(results) as store:
                (run,) = store.runs()
            screenshot(d, shots, "12-run-being-written")
            d.find_element("link text", run.run_id).click()
            # sinks finishes first; the countdown family (5 parts x 3 s) is still in progress
            sinks_graph = '[id*=\'"family":"sinks"\']'
            wait_for(
                d,
                lambda x: x.execute_script(
                    f"var g = document.querySelector(`{sinks_graph} .js-plotly-plot`); return !!(g && g._fullLayout);"
                ),
                90,
                "the sinks heatmap while the run is written",
            )
            countdown = text_of(d, "#section-family-countdown")
            assert "In progress" in countdown, countdown
            assert proc.poll() is None, "the atlas run ended too early for this test"
            screenshot(d, shots, "13-atlas-while-writing")
            click_heatmap_cell(d, sinks_graph, 1, 0)
            wait_for(d, element("#table-head-scores"), 30, "the head page while the run is written")
            assert "sinks" in text_of(d, "#table-head-scores")
            d.find_element("id", "link-atlas").click()
            # the rest arrives by itself: the countdown heatmap and the status 'complete'
            wait_for(d, element('[id*=\'"family":"countdown"\'] .js-plotly-plot'), 120, "the countdown heatmap")
            wait_for(d, lambda x: "status complete" in page_text(x), 60, "status complete")
            screenshot(d, shots, "14-atlas-complete")
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0, out
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
