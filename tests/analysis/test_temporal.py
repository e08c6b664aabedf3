"""Temporal family: synthetic heads get the right class and period/offset; formulas vs slow versions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis.temporal import (
    TemporalConfig,
    analyze_temporal,
    ar_predictability,
    classify_profile,
    lag_similarity,
    q_similarity,
    transfer_function,
    vertical_share,
)
from workbench.kernels import attention_with_stats, offset_profile
from workbench.models import load_model

N, D = 96, 128
PERIOD = 7


def _synthetic_heads() -> tuple[torch.Tensor, torch.Tensor]:
    """q, k [1, 4, N, D] for: previous-token, sink, periodic (period 7), random."""
    eye = torch.eye(D)
    q = torch.zeros(4, N, D)
    k = torch.zeros(4, N, D)
    # 0: previous token: query i matches the positional code of key i - 1
    k[0] = eye[:N]
    q[0, 1:] = 30 * eye[: N - 1]
    # 1: sink: every query matches a direction only key 0 carries
    q[1] = eye[D - 1]
    k[1, 0] = 30 * eye[D - 1]
    # 2: periodic: query i matches every key with the same phase i mod 7
    phase = torch.arange(N) % PERIOD
    q[2] = 30 * eye[phase]
    k[2] = eye[phase]
    # 3: random, weak: diffuse attention
    g = torch.Generator().manual_seed(0)
    q[3] = 0.05 * torch.randn(N, D, generator=g)
    k[3] = 0.05 * torch.randn(N, D, generator=g)
    return q[None], k[None]


def test_synthetic_heads_get_the_right_label_period_and_offset():
    q, k = _synthetic_heads()
    v = torch.zeros_like(k)
    cfg = TemporalConfig()
    _, stats = attention_with_stats(q, k, v, scale=1.0, backend="torch")
    profile = offset_profile(q, k, stats.lse, scale=1.0, max_offset=cfg.max_offset)[0].double().numpy()
    labels = [classify_profile(profile[h], vertical_share(stats.col_sum[0, h].numpy(), N, cfg.top_keys), cfg) for h in range(4)]
    assert (labels[0].label, labels[0].offset) == ("sequential", 1)
    assert labels[1].label == "re-access"
    assert (labels[2].label, labels[2].period) == ("seasonal", PERIOD)
    assert labels[3].label == "unpredictable"
    assert all(0.0 <= lab.confidence <= 1.0 for lab in labels)
    assert labels[0].confidence > 0.9 and labels[1].confidence > 0.9


def test_q_similarity_equals_the_tappa_formula():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(50, 3, 8, generator=g) + torch.tensor([2.0] + [0.0] * 7)
    got = q_similarity(q, window=16, stride=8)
    want = []
    for s in range(0, 50 - 16 + 1, 8):
        w = q[s : s + 16].transpose(0, 1).double()
        w = w / w.norm(dim=-1, keepdim=True)
        sim = w @ w.transpose(-1, -2)
        want.append(((sim.sum((-1, -2)) - 16) / (16 * 15)).numpy())
    np.testing.assert_allclose(got, np.mean(want, 0), atol=1e-12)
    lag = lag_similarity(q)
    np.testing.assert_allclose(
        lag[0], torch.nn.functional.cosine_similarity(q[1:, 0], q[:-1, 0], dim=-1).mean().item(), atol=1e-6
    )


def test_ar_predictor_beats_persistence_on_a_rotating_query():
    t = torch.arange(200, dtype=torch.float64)
    q = torch.stack([torch.cos(0.9 * t), torch.sin(0.9 * t), torch.ones_like(t) * 0.1], -1)[:, None, :]  # [N, 1, 3]
    ar, persist = ar_predictability(q.float(), order=2, ridge=1e-6, fit_fraction=0.5)
    assert ar[0] > 0.999 and persist[0] < 0.7


def test_batched_ar_fit_equals_each_head_fitted_alone_the_slow_way():
    """The one batched solve over heads against numpy ridge normal equations, one head at a time."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(90, 5, 4, generator=g, dtype=torch.float64).cumsum(0)  # [N, H, D], a random walk per head
    order, ridge, frac = 3, 1e-3, 0.6
    ar, persist = ar_predictability(q, order=order, ridge=ridge, fit_fraction=frac)
    n, split = q.shape[0], int(q.shape[0] * frac)
    x = q.numpy()

    def cos(a, b):
        return float(np.mean(np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))))

    for h in range(q.shape[1]):
        rows = [np.concatenate([*(x[t - l - 1, h] for l in range(order)), [1.0]]) for t in range(order, n)]
        feats, target = np.array(rows), x[order:, h]
        a, y = feats[: split - order], target[: split - order]
        w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ y)
        np.testing.assert_allclose(ar[h], cos(feats[split - order :] @ w, target[split - order :]), atol=1e-10)
        np.testing.assert_allclose(persist[h], cos(x[split - 1 : n - 1, h], x[split:, h]), atol=1e-10)


def test_transfer_function_of_a_delay_is_flat_with_linear_phase():
    h = np.zeros(16)
    h[1] = 1.0
    omega, mag, phase = transfer_function(h)
    np.testing.assert_allclose(mag, 0.0, atol=1e-9)
    np.testing.assert_allclose(phase, -omega, atol=1e-9)


def test_analyze_temporal_runs_on_a_model(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    prompts = [torch.randint(4, 60, (1, 80), generator=torch.Generator().manual_seed(s)) for s in range(2)]
    report = analyze_temporal(model, prompts)
    assert report.profiles.shape == (2, 4, 64)
    assert report.rope_shares.shape == (2, 4, 8)
    np.testing.assert_allclose(report.rope_shares.sum(-1), 1.0, atol=1e-9)
    assert set(report.labels) == {(l, h) for l in range(2) for h in range(4)}
    assert np.isfinite(report.scores["q_sim_prune"]).all() and np.isfinite(report.scores["q_sim_pre_windowed"]).all()


def test_period_copy_share_reads_lags_one_short_of_each_period():
    from workbench.analysis.temporal import period_copy_share

    h = np.zeros(40)
    h[6], h[13], h[1] = 0.5, 0.25, 0.2  # copies one and two periods back (P = 7), plus a previous-token part
    assert period_copy_share(h, 7) == pytest.approx(0.75)
    assert period_copy_share(h, 5) == pytest.approx(0.0)  # lags 4, 9, 14, ... hold nothing
    lab = classify_profile(h, vertical=0.0)
    assert lab.label == "sequential" and lab.offset == 6  # one strong diagonal: the shape view says sequential
    with pytest.raises(ValueError):
        period_copy_share(h, 1)


def _periodic_profile(period: int, max_offset: int = 64) -> np.ndarray:
    """Offset profile of a head whose query at phase t mod P matches every key of the same phase."""
    n, d = 160, 64
    eye = torch.eye(d)
    phase = torch.arange(n) % period
    q, k = (30 * eye[phase])[None, None], eye[phase][None, None]
    _, stats = attention_with_stats(q, k, torch.zeros_like(k), scale=1.0, backend="torch")
    return offset_profile(q, k, stats.lse, scale=1.0, max_offset=max_offset)[0, 0].double().numpy()


@pytest.mark.parametrize("period", [4, 6, 7, 8, 12])
def test_seasonal_period_is_the_fundamental_not_a_divisor(period):
    """Stripes every P tokens are also stripes every divisor of P; the label must say P (it said 2 for 8)."""
    lab = classify_profile(_periodic_profile(period), vertical=0.0)
    assert (lab.label, lab.period) == ("seasonal", period)


def test_a_single_rope_pair_head_is_matched_to_that_pair():
    """A head whose logit comes from one RoPE pair of period 8: label period 8, matched pair = that pair."""
    from workbench.analysis.scores import HeadScores
    from workbench.analysis.temporal import TemporalReport, period_channel, rope_channel_shares

    n, periods = 160, [3.0, 8.0, 20.0, 50.0]  # pair i rotates by 2 pi / periods[i] per token
    theta = torch.tensor([2 * np.pi / p for p in periods], dtype=torch.float64)
    half = len(periods)
    t = torch.arange(n, dtype=torch.float64)[:, None]
    a = torch.zeros(2 * half, dtype=torch.float64)
    a[1], a[1 + half] = 6.0, 0.0  # only pair 1 (channels 1 and 1 + half) carries the query and key
    cos, sin = torch.cos(t * theta), torch.sin(t * theta)
    rot = torch.cat([a[:half] * cos - a[half:] * sin, a[:half] * sin + a[half:] * cos], dim=-1)  # rotate-half RoPE
    q, k = rot.float()[None, None], rot.float()[None, None]
    _, stats = attention_with_stats(q, k, torch.zeros_like(k), scale=1.0, backend="torch")
    profile = offset_profile(q, k, stats.lse, scale=1.0, max_offset=64)[0, 0].double().numpy()
    lab = classify_profile(profile, vertical=0.0)
    assert (lab.label, lab.period) == ("seasonal", 8)
    shares = rope_channel_shares(q[0], k[0], 2 * half, 4096, 0)
    report = TemporalReport(
        HeadScores("temporal", 1, 1), {(0, 0): lab}, profile[None, None], shares[None], np.array([periods]), np.zeros(1)
    )
    pair, pair_period, share = period_channel(report, (0, 0))
    assert (pair, pair_period) == (1, 8.0) and share > 0.99
