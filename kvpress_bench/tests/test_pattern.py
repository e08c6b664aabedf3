"""The exported DuoAttention-format folder: it loads, and kvpress's threshold gives the exported split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kvpress_bench.pattern import PatternError, load_pattern, write_pattern
from kvpress_bench.presses import AtlasDuoAttentionPress
from kvpress_bench.runner import ORGANISM, TRIALS, load_trials, trial_sets

EXPORT = ORGANISM.parents[3] / "kvpress_bench" / "data" / "organism-4l-duo"


def test_committed_export_loads_in_the_documented_format():
    p = load_pattern(EXPORT, 4, 4)
    assert p.scores.shape == (4, 4)
    assert p.scores.min() >= 0 and p.scores.max() <= 1
    wb = p.workbench
    for key in ("run_id", "model", "metric", "streaming_kv_heads", "full_kv_heads", "full_fraction"):
        assert key in wb
    assert p.sink_size == 4 and p.recent_size == 32
    full = {tuple(x) for x in wb["full_kv_heads"]}
    streaming = {tuple(x) for x in wb["streaming_kv_heads"]}
    assert not full & streaming and len(full | streaming) == 16


def test_kvpress_threshold_gives_the_exported_split():
    p = load_pattern(EXPORT)
    wb = p.workbench
    assert p.streaming_set(1 - wb["full_fraction"]) == {tuple(x) for x in wb["streaming_kv_heads"]}
    # the scores are distinct (ties broken by the export), so every ratio has one answer
    assert len(np.unique(p.scores)) == p.scores.size
    if "ranking" in wb:
        assert p.ranking() == [tuple(x) for x in wb["ranking"]]


def test_hand_made_folder_round_trip(tmp_path):
    scores = np.arange(16, dtype=float).reshape(4, 4) / 15
    write_pattern(tmp_path, scores, 2, 8, {"full_fraction": 0.25})
    p = load_pattern(tmp_path, 4, 4)
    np.testing.assert_allclose(p.scores, scores, atol=1e-8)
    assert (p.sink_size, p.recent_size) == (2, 8)
    assert p.streaming_set(0.75) == {(l, k) for l in range(3) for k in range(4)}


def test_bad_folders_are_refused(tmp_path):
    with pytest.raises(PatternError):
        load_pattern(tmp_path)
    write_pattern(tmp_path, np.zeros((3, 4)), 4, 32)
    with pytest.raises(PatternError, match="layers"):
        load_pattern(tmp_path, 4, 4)
    write_pattern(tmp_path, np.full((4, 4), 2.0), 4, 32)
    with pytest.raises(PatternError, match=r"\[0, 1\]"):
        load_pattern(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"sink_size": 4}))
    with pytest.raises(PatternError, match="recent_size"):
        load_pattern(tmp_path)


def test_press_streaming_mask_equals_the_exported_set(model):
    wb = load_pattern(EXPORT).workbench
    press = AtlasDuoAttentionPress(head_compression_ratio=1 - wb["full_fraction"], pattern_dir=str(EXPORT))
    press.post_init_from_model(model)  # what `with press(model)` calls first
    mask = press.streaming_mask.cpu().numpy()
    assert {(l, k) for l, k in zip(*np.nonzero(mask))} == {tuple(x) for x in wb["streaming_kv_heads"]}
    assert (press.sink_size, press.recent_size) == (4, 32)


@pytest.mark.parametrize("n_full", [0, 1, 3, 8, 16])
def test_press_mask_at_every_ratio_is_the_bottom_of_the_export_ranking(model, n_full):
    p = load_pattern(EXPORT)
    press = AtlasDuoAttentionPress(head_compression_ratio=1 - n_full / 16, pattern_dir=str(EXPORT))
    press.post_init_from_model(model)
    got = {(int(l), int(k)) for l, k in zip(*np.nonzero(press.streaming_mask.cpu().numpy()))}
    assert got == set(p.ranking()[n_full:])


def test_press_reads_sink_and_recent_from_the_folder(model, tmp_path):
    write_pattern(tmp_path, np.linspace(0, 1, 16).reshape(4, 4), 2, 8)
    press = AtlasDuoAttentionPress(head_compression_ratio=0.5, pattern_dir=str(tmp_path))
    press.post_init_from_model(model)
    assert (press.sink_size, press.recent_size) == (2, 8)
    assert press.streaming_mask[:2].all() and not press.streaming_mask[2:].any()


def test_trials_json_has_the_sets():
    assert {"needle-256", "needle-512"} <= set(trial_sets(TRIALS))
    t = load_trials(TRIALS, "needle-512", 2)[0]
    assert len(t.prompt) == 512 and len(t.answer) == 2 and len(t.context) == 510
