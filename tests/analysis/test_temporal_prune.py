"""TAPPA's pruning-path q-similarity (Prune/prune/model_utils.py): pre-RoPE queries, chunks of up to
max_seq_len tokens starting every stride, all ordered off-diagonal pairs; against slow loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench.analysis.temporal import TemporalConfig, analyze_temporal, q_similarity, q_similarity_prune
from workbench.models import load_model
from workbench.models.hooks import temporary_hooks


def _prune_loop(q: np.ndarray, max_seq_len: int, stride: int) -> list[list[float]]:
    """One row per chunk q[s : s + max_seq_len], s = 0, stride, ... < N; per head the mean over ordered
    pairs t != u of q_t . q_u / ((|q_t| + 1e-8)(|q_u| + 1e-8)). Single-token chunks have no pair."""
    n, n_heads, _ = q.shape
    rows = []
    for start in range(0, n, stride):
        chunk = q[start : start + max_seq_len]
        t = len(chunk)
        if t < 2:
            continue
        row = []
        for h in range(n_heads):
            total = 0.0
            for i in range(t):
                for j in range(t):
                    if i != j:
                        a, b = chunk[i, h], chunk[j, h]
                        total += float(a @ b) / ((math.sqrt(a @ a) + 1e-8) * (math.sqrt(b @ b) + 1e-8))
            row.append(total / (t * (t - 1)))
        rows.append(row)
    return rows


def test_prune_q_similarity_equals_the_loop_over_chunks_and_pairs():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(129, 2, 4, generator=g, dtype=torch.float64) + torch.tensor([1.5, 0.0, 0.0, 0.0], dtype=torch.float64)
    # chunks start at 0, 32, 64, 96, 128: the last holds one token (no pair: left out)
    got = q_similarity_prune(q, max_seq_len=64, stride=32)
    want = _prune_loop(q.numpy(), 64, 32)
    assert got.shape == (4, 2) and len(want) == 4
    np.testing.assert_allclose(got, want, atol=1e-12)
    # one chunk covering the whole prompt is not the windowed statistic (windows of 32 every 16)
    whole = q_similarity_prune(q, max_seq_len=1024, stride=256)
    np.testing.assert_allclose(whole, _prune_loop(q.numpy(), 1024, 256), atol=1e-12)
    assert np.abs(whole[0] - q_similarity(q, 32, 16)).max() > 1e-3


def test_the_atlas_reports_the_prune_path_beside_the_windowed_one(tiny_model_dir):
    """analyze_temporal's q_sim_prune = TAPPA's mean over every chunk of every prompt (prompts of 80 and 50
    tokens, chunks of 32 every 16) of the hook_q queries; layer_q_sim its mean over heads."""
    model = load_model(tiny_model_dir("llama"), device="cpu")
    prompts = [torch.randint(4, 60, (1, n), generator=torch.Generator().manual_seed(n)) for n in (80, 50)]
    cfg = TemporalConfig(prune_max_seq_len=32, prune_stride=16)
    captured: dict[int, list[np.ndarray]] = {0: [], 1: []}

    def grab(layer):
        return lambda t, hook: captured[layer].append(t.detach()[0].double().numpy())

    with temporary_hooks([(model.bridge.blocks[l].attn.hook_q, grab(l)) for l in (0, 1)]):
        report = analyze_temporal(model, prompts, cfg)
    for layer in (0, 1):
        queries = captured[layer][-2:]  # the prompts' forwards (the recorder's self-check probe runs first)
        assert [q.shape[0] for q in queries] == [80, 50]
        rows = [r for q in queries for r in _prune_loop(q, 32, 16)]  # 5 + 4 chunks (the 1-token tails dropped)
        assert len(rows) == 9
        np.testing.assert_allclose(report.scores["q_sim_prune"][layer], np.mean(rows, 0), atol=1e-6)
    np.testing.assert_allclose(report.layer_q_sim, report.scores["q_sim_prune"].mean(1), atol=1e-12)
    assert "q_sim_pre" not in report.scores.metrics  # the windowed one is named for what it is
    assert report.scores["q_sim_pre_windowed"].shape == (2, 4)
    assert not np.allclose(report.scores["q_sim_pre_windowed"], report.scores["q_sim_prune"], atol=1e-4)


@pytest.mark.parametrize("n", [1])
def test_prune_q_similarity_refuses_a_single_token(n):
    with pytest.raises(Exception, match="too short"):
        q_similarity_prune(torch.zeros(n, 1, 4))
