"""TAPPA's eviction (CAKE's key score and split, q-sim preference) against slow direct computations."""

from __future__ import annotations

import torch

from workbench.interventions.kv_eviction import (
    TappaConfig,
    allocate,
    evicted_cache,
    kept_keys,
    key_scores,
    prefill_view,
    tappa_budgets,
)
from workbench.record import record_attention


def test_key_score_is_mean_plus_gamma_variance_pooled_and_group_averaged():
    g = torch.Generator().manual_seed(0)
    attn = torch.rand(4, 8, 40, generator=g, dtype=torch.float64)  # [H, w, N], 2 KV heads of 2 query heads
    cfg = TappaConfig(window=8, gamma=200.0, pool_kernel=5)
    got = key_scores(attn, group=2, cfg=cfg)
    n = 40 - 8
    want = torch.zeros(2, n, dtype=torch.float64)
    for kv in range(2):
        for h in (2 * kv, 2 * kv + 1):
            raw = [float(attn[h, :, j].mean()) + 200.0 * float(attn[h, :, j].var()) for j in range(n)]
            pooled = [sum(raw[j + d] for d in range(-2, 3) if 0 <= j + d < n) / 5 for j in range(n)]  # zero padding
            want[kv] += torch.tensor(pooled, dtype=torch.float64) / 2
    torch.testing.assert_close(got, want)


def test_cake_split_is_proportional_capped_and_exact():
    b = allocate([0.5, 0.1, 0.4], total=100, cap=45)
    assert b.sum() == 100 and b.max() <= 45
    assert b[0] == 45 and b[2] > b[1]  # the capped excess went to the others, in proportion
    assert allocate([1, 1], total=1000, cap=30).tolist() == [30, 30]  # more than the prompt: keep it all


def test_evicted_keys_are_invisible_to_decode_queries_only(tiny_llama):
    model = tiny_llama
    cfg = TappaConfig(window=8)
    prompt = torch.randint(4, 60, (40,), generator=torch.Generator().manual_seed(2))
    view = prefill_view(model, prompt, cfg.window)
    budgets = tappa_budgets(view, [0.9, 0.1], total=6 * model.geometry.n_layers, cfg=cfg)
    assert budgets.sum() == 12 and budgets[1] > budgets[0]  # lower q-sim, larger budget
    kept = kept_keys(view, budgets, model.geometry.group_size, cfg)
    assert all(k[:, -8:].all() for k in kept) and [int(k[0, :-8].sum()) for k in kept] == budgets.tolist()
    full = torch.cat([prompt, torch.randint(4, 60, (5,), generator=torch.Generator().manual_seed(3))])[None]
    _, base = record_attention(model, full, backend="eager", keep_patterns=True)
    with evicted_cache(model, kept, 40):
        _, rec = record_attention(model, full, backend="eager", keep_patterns=True)
    for layer, keep in enumerate(kept):
        p, p0 = rec.patterns[layer][0], base.patterns[layer][0]
        torch.testing.assert_close(p[:, :40], p0[:, :40])  # the prefill is untouched
        per_q = keep[torch.tensor(model.geometry.head_to_kv)]  # [H, 40]
        assert float(p[:, 40:, :40][~per_q[:, None, :].expand(-1, 5, -1)].abs().max()) == 0.0
        torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)))


def test_tappa_decision_reports_both_policies_with_an_interval(tiny_llama):
    from workbench.analysis.temporal import tappa_decision
    from workbench.data.needles import NeedleTrial

    g = torch.Generator().manual_seed(4)
    trials = []
    for _ in range(3):
        prompt = torch.randint(4, 60, (48,), generator=g)
        trials.append(NeedleTrial(prompt, prompt[10:12].clone(), (10, 12), 48, 0.2))
    d = tappa_decision(tiny_llama, trials, [2, 100], TappaConfig(window=8))
    assert d.n_trials == 3 and len(d.tappa_accuracy) == len(d.uniform_accuracy) == 2
    assert d.tappa_accuracy[1] == d.uniform_accuracy[1] == d.full_accuracy  # budget above the prompt: nothing evicted
    assert all(lo <= m <= hi for lo, m, hi in zip(d.diff_low, d.diff_mean, d.diff_high))


def test_key_scores_with_no_prefix_keys_or_one_window_row():
    """A prompt no longer than the window has no prefix key to evict (it crashed the organism's temporal
    family at --max-tokens 32); a one-row window has no variance term."""
    cfg = TappaConfig()
    empty = key_scores(torch.rand(4, 8, 8).softmax(-1), group=2, cfg=cfg)
    assert empty.shape == (2, 0)
    one_row = key_scores(torch.rand(4, 1, 9).softmax(-1), group=2, cfg=cfg)
    assert one_row.shape == (2, 8) and torch.isfinite(one_row).all()
