"""`make demo` (python -m workbench.demo): the atlas with every family on the default model, then
the report; it must finish in time and the report's numbers must equal the store's."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from atlas_helpers import assert_report_matches_store

from workbench.store import Store


@pytest.mark.slow
def test_demo_writes_a_report_whose_numbers_equal_the_store(tmp_path):
    results = tmp_path / "wb-results"
    env = {**os.environ, "WORKBENCH_RESULTS": str(results)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert seconds < 600, f"make demo took {seconds:.0f} s"
    assert "open the dashboard with: workbench app --results" in proc.stdout
    with Store.open(results) as store:
        (run,) = store.runs()
        assert run.status == "complete"
        from workbench.demo import demo_families
        from workbench.families.registry import family_names
        from workbench.models.registry import DEFAULT_MODEL, shipped_models

        assert run.families == demo_families(run.model)
        if DEFAULT_MODEL in shipped_models():
            assert run.families == family_names()  # all families on the organism
    folder = results / "runs" / run.run_id
    assert f"report:  {(folder / 'report.html').resolve()}" in proc.stdout
    assert_report_matches_store(results, run.run_id, folder / "report.html", folder / "report.json")
