"""KV-head labels for compression engines: the three formats round-trip to the run they came from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.atlas import Atlas
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.interventions.kv_budget import rank_kv_heads
from workbench.report.kv_export import (
    TIE_STEP,
    HeadLabels,
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
    # the scores survive (up to the tie offsets, at most TIE_STEP x N), and their order is the atlas's ranking
    n = labels.n_layers * labels.n_kv_heads
    np.testing.assert_allclose(pattern, np.clip(np.nan_to_num(labels.kv_scores), 0, 1), atol=TIE_STEP * n * 1.001)
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


# -- the engines' own thresholding rules, re-implemented ----------------------------------------------


def _duo_attention_full(pattern: np.ndarray, sparsity: float, seed: int) -> set[tuple[int, int]]:
    """DuoAttention's loader (duo_attn/utils.py): clip to [0, 1], add uniform(0, 1e-6) noise, threshold at
    the `sparsity` quantile (numpy's linear interpolation), keep values >= the threshold as full heads;
    sparsity >= 1 keeps none, <= 0 keeps all."""
    noisy = np.clip(pattern, 0, 1) + np.random.RandomState(seed).uniform(0, 1e-6, pattern.shape)
    threshold = float(np.quantile(noisy, sparsity))
    if sparsity >= 1:
        threshold = 2.0
    if sparsity <= 0:
        threshold = -1.0
    return {(int(l), int(k)) for l, k in zip(*np.nonzero(noisy >= threshold))}


def _kvpress_streaming(pattern: np.ndarray, ratio: float) -> set[tuple[int, int]]:
    """kvpress's DuoAttentionPress: the lowest round(size x ratio) clipped scores stream."""
    n = round(pattern.size * ratio)
    flat = np.argsort(np.clip(pattern, 0, 1), axis=None)[:n]
    return {(int(l), int(k)) for l, k in zip(*np.unravel_index(flat, pattern.shape))}


def _tied_labels(n_layers: int, n_kv: int, fraction: float) -> HeadLabels:
    """Labels whose KV scores tie in blocks of 3 (at 0.25 x 16 the 4th full head sits in a tied block),
    ranked as the atlas ranks them (descending, ties by index)."""
    rng = np.random.default_rng(0)
    levels = np.repeat(np.linspace(0.9, 0.1, (n_layers * n_kv + 2) // 3), 3)[: n_layers * n_kv]
    kv = rng.permutation(levels).reshape(n_layers, n_kv)
    kv[0, 0] = 1.3  # clipped to 1 by both loaders, still ranked first
    heads = np.repeat(kv, 2, axis=1)  # 2 query heads per KV head, equal scores
    return HeadLabels(
        "run", "m", "retrieval_score", "max", n_layers, 2 * n_kv, n_kv, heads, kv, rank_kv_heads(kv), fraction, 4, 32
    )


@pytest.mark.parametrize("shape", [(4, 4), (5, 4)])  # 16 KV heads, and 20 (half-way roundings at odd steps)
def test_duo_attention_loader_and_kvpress_give_the_atlas_split_at_every_fraction(tmp_path, shape):
    fractions = [round(0.025 * k, 3) for k in range(1, 40)]
    for fraction in fractions:
        labels = _tied_labels(*shape, fraction)
        total = labels.n_layers * labels.n_kv_heads
        full, streaming = set(labels.full_kv_heads), set(labels.streaming_kv_heads)
        assert len(full) == round(fraction * total) and len(full | streaming) == total
        sparsity = len(streaming) / total  # the value the README says to pass to both engines
        assert labels.sparsity == pytest.approx(sparsity, abs=1e-12)
        folder = tmp_path / f"duo-{fraction}"
        export_labels(labels, "duo-attention", folder)
        pattern = np.loadtxt(folder / "full_attention_heads.tsv", dtype=float, delimiter="\t")  # as the loader reads it
        assert json.loads((folder / "config.json").read_text())["workbench"]["sparsity"] == pytest.approx(sparsity)
        kept = [_duo_attention_full(pattern, sparsity, seed) for seed in range(200)]
        assert sum(k == full for k in kept) == 200, f"fraction {fraction}: DuoAttention's loader redraws the split"
        assert _kvpress_streaming(pattern, sparsity) == streaming, f"fraction {fraction}: kvpress's rule differs"
        assert streaming_set_at(pattern, sparsity) == sorted(streaming)


def test_the_pattern_follows_a_ranking_that_disagrees_with_the_scores():
    labels = _tied_labels(2, 4, 0.5)
    labels.ranking = list(reversed(labels.ranking))  # e.g. ranked by another metric than the scores written
    pattern = labels.pattern()
    values = [pattern[c] for c in labels.ranking]
    assert all(a - b >= TIE_STEP * (1 - 1e-9) for a, b in zip(values, values[1:]))
    assert ((pattern > 0) & (pattern <= 1)).all()
    assert {c for c in labels.ranking if pattern[c] >= np.quantile(pattern, labels.sparsity)} == set(labels.full_kv_heads)
