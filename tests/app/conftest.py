"""Fixtures of the dashboard tests: stores (made by the real atlas runner, or written through the
store API), the browser, and where screenshots go ($WB_SCREENSHOT_DIR, else a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_helpers import browser_missing, fresh_profile, make_driver, remove, screenshot_folder, write_run
from optional_deps import missing

WORDS = " ".join(f"w{(i * 7) % 60}" for i in range(40))
PROMPTS = [WORDS, " ".join(f"w{(i * 11 + 3) % 60}" for i in range(40))]


@pytest.fixture(scope="session")
def atlas_results(tiny_model_dir, tmp_path_factory):
    """Two runs of the real `workbench atlas` on a tiny Llama: A (sinks + temporal, a prompt file)
    and B (sinks, another seed), in one results folder. Returns (folder, run A, run B)."""
    from workbench.atlas import Atlas

    results = tmp_path_factory.mktemp("app-atlas")
    prompt_file = results.parent / "app-prompts.txt"
    prompt_file.write_text("\n".join(PROMPTS) + "\n")
    model = str(tiny_model_dir("llama"))
    common = {"max_tokens": 48, "options": {"sinks": {"evidence_heads": 2}}}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_FAMILY_PLUGINS", "workbench.families.temporal:TemporalFamily")
        a = Atlas(model, "sinks,temporal", results, prompts=prompt_file, **common).run().run_id
        b = Atlas(model, "sinks", results, seed=1, n_prompts=2, **common).run().run_id
    return results, a, b


@pytest.fixture(scope="session")
def synthetic_results(tiny_model_dir, tmp_path_factory):
    """Two small runs written through the store API (fast): (folder, run A, run B)."""
    results = tmp_path_factory.mktemp("app-synthetic")
    model = tiny_model_dir("llama")
    a = write_run(results, model, 2, 4, seed=0, prompts=PROMPTS, run_id="run-a")
    b = write_run(results, model, 2, 4, seed=1, temporal=False, run_id="run-b")
    return results, a, b


@pytest.fixture(scope="module")
def browser():
    why = browser_missing()
    if why:
        missing(why)
    profile = fresh_profile()
    driver = make_driver(profile)
    try:
        yield driver
    finally:
        driver.quit()
        remove(profile)


@pytest.fixture(scope="session")
def shots(tmp_path_factory) -> Path:
    return screenshot_folder(tmp_path_factory.mktemp("screenshots"))
