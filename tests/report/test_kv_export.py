"""KV-head labels for compression engines: the three formats round-trip to the run they came from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.atlas import Atlas
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.report.kv_export import (
    export_labels,
    head_labels,
    read_duo_attention,
    read_headkv,
    read_json,
    streaming_set_at,
)
from workbench.store import Store


@pytest.fixture(scope="module")
def retrieval_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("kv-export")
    result = Atlas(tiny_model_dir("llama"), ["retrieval"], root, n_prompts=2, max_tokens=64).run()
    return root, result.run_id


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_duo_attention_folder_round_trips_and_thresholds_to_the_atlas_split(retrieval_run, tmp_path, fraction):
    root, run_id = retrieval_run
    with Store.open(root) as store:
        labels = head_labels(store, run_id, fraction)
        curve = store.artefacts(run_id, "retrieval")["kv_budget_curve"]
    assert [f"L{l}KV{k}" for l, k in labels.ranking] == curve["kv_heads_ranked"]  # the run's own ranking
    export_labels(labels, "duo-attention", tmp_path / "duo")
    pattern, config = read_duo_attention(tmp_path / "duo")
    assert pattern.shape == (labels.n_layers, labels.n_kv_heads) and ((pattern >= 0) & (pattern <= 1)).all()
    assert (config["sink_size"], config["recent_size"]) == (curve["sink"], curve["recent"])
    # the scores survive (up to the tie offsets), and their order is the atlas's ranking
    np.testing.assert_allclose(pattern, np.clip(np.nan_to_num(labels.kv_scores), 0, 1), atol=1e-5)
    order = sorted((-pattern[c], c) for c in labels.ranking)
    assert [c for _, c in order] == labels.ranking
    # an engine streaming the lowest round(n x (1 - f)) values (kvpress's rule) streams exactly the atlas's set
    assert streaming_set_at(pattern, 1.0 - fraction) == labels.streaming_kv_heads
    assert [tuple(x) for x in config["workbench"]["streaming_kv_heads"]] == labels.streaming_kv_heads


def test_headkv_and_json_round_trip(retrieval_run, tmp_path):
    root, run_id = retrieval_run
    with Store.open(root) as store:
        labels = head_labels(store, run_id, 0.25)
        scores = store.scores(run_id, "retrieval")["retrieval"][labels.metric]
    export_labels(labels, "headkv", tmp_path / "headkv.json")
    back = read_headkv(tmp_path / "headkv.json")
    for (layer, head), value in back.items():
        expected = scores[layer, head]
        assert (value is None and np.isnan(expected)) or value == pytest.approx(expected)
    assert len(back) == labels.n_layers * labels.n_heads
    export_labels(labels, "json", tmp_path / "labels.json")
    doc = read_json(tmp_path / "labels.json")
    assert doc["run_id"] == run_id and doc["full_kv_heads"] == [list(x) for x in labels.full_kv_heads]
    assert len(doc["full_kv_heads"]) + len(doc["streaming_kv_heads"]) == labels.n_layers * labels.n_kv_heads


def test_the_cli_writes_each_format_and_refuses_a_run_without_retrieval(retrieval_run, tmp_path, tiny_model_dir, capsys):
    root, run_id = retrieval_run
    for fmt, target in (("duo-attention", tmp_path / "d"), ("headkv", tmp_path / "h.json"), ("json", tmp_path / "j.json")):
        assert main(["export", run_id, "--results", str(root), "--format", fmt, "--out", str(target)]) == 0
        assert target.exists()
    assert json.loads((tmp_path / "d" / "config.json").read_text())["workbench"]["run_id"] == run_id
    other = Atlas(
        tiny_model_dir("llama"), ["sinks"], tmp_path / "s", n_prompts=2, max_tokens=32, options={"sinks": {"act": False}}
    ).run()
    assert main(["export", other.run_id, "--results", str(tmp_path / "s"), "--format", "duo-attention"]) == 2
    assert "no finished retrieval family" in " ".join(capsys.readouterr().err.split())
    with Store.open(root) as store, pytest.raises(WorkbenchError, match="outside"):
        head_labels(store, run_id, 1.5)
