"""The Python API (`workbench.Atlas`): run, result tables, resume with a missing input, preflight."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import Atlas
from workbench.atlas import PreflightError
from workbench.errors import WorkbenchError
from workbench.store import Store


@pytest.fixture(scope="module")
def sinks_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    result = Atlas(tiny_model_dir("llama"), ["sinks"], root, n_prompts=2, max_tokens=32, options={"sinks": {"act": False}}).run()
    return result, root


def test_run_returns_a_result_whose_tables_equal_the_store(sinks_run):
    result, root = sinks_run
    assert result.status == "complete" and result.families == ["sinks"]
    long = result.scores()
    with Store.open(root) as store:
        stored = store.scores(result.run_id)["sinks"]
    n_layers, n_heads = stored.n_layers, stored.n_heads
    assert set(long["metric"]) == set(stored.metrics) and len(long) == len(stored.metrics) * n_layers * n_heads
    table = result.table("sinks")
    assert len(table) == n_layers * n_heads and table.index.is_unique  # one row per head
    for metric, values in stored.metrics.items():
        np.testing.assert_array_equal(table.loc["L1H2", metric], values[1, 2])
    assert result.summary("sinks")["prompt_source"].startswith("random-tokens")  # a 64-word vocabulary
    assert result.warnings and "random tokens" in result.warnings[0]
    assert set(result.members("sinks")) <= set(table.index)


def test_preflight_lists_every_problem_before_any_work(tiny_model_dir, tmp_path):
    atlas = Atlas(tiny_model_dir("llama"), ["sinks", "safety"], tmp_path, max_tokens=100000)
    with pytest.raises(PreflightError) as info:
        atlas.run()
    families = [p.family for p in info.value.problems]
    assert families == ["run", "safety", "safety"]  # context too long; harmful and harmless sets unreadable
    assert not (tmp_path / "workbench.sqlite").exists()


def test_a_resumed_run_may_be_given_its_missing_input(tiny_model_dir, tmp_path):
    """A run whose safety input went missing after it started: resume refuses until it is given again."""
    harmful = tmp_path / "harmful.txt"
    harmful.write_text("w1 w2 w3 w4\nw5 w6 w7\nw8 w9 w10 w11 w12\n")
    opts = {"safety": {"harmful_file": str(harmful), "max_new_tokens": 2, "heads_per_part": 8}}
    atlas = Atlas(tiny_model_dir("llama"), ["safety"], tmp_path / "r", n_prompts=2, max_tokens=16, options=opts)

    def stop(*_):
        raise KeyboardInterrupt

    atlas.progress.on_part = stop  # stop before the first part, as Ctrl-C would
    with pytest.raises(KeyboardInterrupt):
        atlas.run()
    moved = tmp_path / "moved.txt"
    harmful.rename(moved)
    with pytest.raises(PreflightError, match="neither a registered set nor an existing file"):
        Atlas(store=tmp_path / "r").resume()
    with pytest.raises(WorkbenchError, match="safety.max_new_tokens cannot change"):
        Atlas(store=tmp_path / "r", options={"safety": {"max_new_tokens": 3}}).resume()
    result = Atlas(store=tmp_path / "r", options={"safety": {"harmful_file": str(moved)}}).resume()
    assert result.status == "complete"
    with Store.open(tmp_path / "r") as store:
        (fam,) = store.families(result.run_id)
    assert fam.options["harmful_file"] == str(moved)
