"""Length-invariant temporal classes: a head with a fixed periodic pattern (one RoPE pair of period 12)
gets the same class and period at 256, 512, 2k and 8k tokens, and the whole-context offset profile
behind it equals its definition (windows counted)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from workbench.analysis.temporal import analyze_temporal, offset_shares, whole_context_profile
from workbench.kernels import attention_with_stats
from workbench.models import load_model
from workbench.models.tiny import build_tiny_model

PERIOD = 12


@pytest.fixture(scope="module")
def periodic_model(tmp_path_factory):
    """Tiny Llama (head_dim 16) whose L0H0 sees only RoPE pair 1, rotated once every 12 tokens, with the
    same pre-RoPE query and key at every position: logit 16 cos(2 pi (t - j) / 12), an exactly periodic
    pattern at any length (every embedding is e_0, so the head's input never changes)."""
    folder = build_tiny_model(tmp_path_factory.mktemp("periodic"), "llama", seed=0, n_ctx=8192)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"]["rope_theta"] = (PERIOD / (2 * math.pi)) ** 8  # theta_1 = base^(-2/16) = 2 pi / 12
    (folder / "config.json").write_text(json.dumps(config))
    model = load_model(folder, device="cpu")
    assert 2 * math.pi / float(model.geometry.positional.layer_inv_freq[0][1]) == pytest.approx(PERIOD, rel=1e-6)
    hf = model.hf_model
    with torch.no_grad():
        hf.model.embed_tokens.weight.zero_()
        hf.model.embed_tokens.weight[:, 0] = 1.0  # RMS-normed to 8 on dim 0
        attn = hf.model.layers[0].self_attn
        for proj in (attn.q_proj, attn.k_proj):  # query head 0 and its KV head 0: rows 0..15
            proj.weight[0:16] = 0.0
            proj.weight[1, 0] = 1.0  # channel 1 = the first half of pair 1: |q| = |k| = 8, logit 64/4 cos
    return model


def _label(model, n: int):
    tokens = torch.randint(4, 60, (1, n), generator=torch.Generator().manual_seed(n))
    tokens[0, 0] = 1
    report = analyze_temporal(model, [tokens])
    return report.labels[(0, 0)]


def test_a_periodic_head_has_the_same_class_and_period_at_256_512_and_2k_tokens(periodic_model):
    """Before, the stripe mass was summed over offsets < 64: seasonal/12 at 256 tokens (0.43), unpredictable
    at 512 (0.27) and 2k (0.10). Now the share of all attention on the stripes, 0.82 at each length."""
    labels = {n: _label(periodic_model, n) for n in (256, 512, 2048)}
    assert {(lab.label, lab.period) for lab in labels.values()} == {("seasonal", PERIOD)}, labels
    confidences = [lab.confidence for lab in labels.values()]
    # edge effects (the first queries see less than a period) shrink as 1/N: a 0.05 spread bounds them
    assert max(confidences) - min(confidences) < 0.05 and min(confidences) > 0.6


@pytest.mark.slow
def test_a_periodic_head_keeps_its_class_and_period_at_8k_tokens(periodic_model):
    short, long = _label(periodic_model, 256), _label(periodic_model, 8192)
    assert (long.label, long.period) == (short.label, short.period) == ("seasonal", PERIOD)
    assert abs(long.confidence - short.confidence) < 0.05


def test_the_whole_context_profile_and_shares_equal_their_definition():
    """h[d] = mean over queries t >= d of A[t, t-d] and share[d] = sum_t A[t, t-d] / N, by loops over an
    explicit pattern, with a sliding window of 8 (keys beyond it are masked: 0 there, not exp(q.k - lse))."""
    g = torch.Generator().manual_seed(0)
    n, d, window = 40, 8, 8
    q, k = torch.randn(1, 2, n, d, generator=g, dtype=torch.float64), torch.randn(1, 1, n, d, generator=g, dtype=torch.float64)
    for w in (None, window):
        _, stats = attention_with_stats(q, k, torch.zeros_like(k), scale=0.5, backend="torch", sliding_window=w)
        got = whole_context_profile(q, k, stats.lse, 0.5, w)
        share = offset_shares(got, n)
        for h in range(2):
            logits = 0.5 * q[0, h] @ k[0, 0].T
            visible = torch.ones(n, n, dtype=torch.bool).tril()
            if w is not None:
                visible &= ~torch.ones(n, n, dtype=torch.bool).tril(-w)
            a = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1).numpy()
            for off in range(n):
                column = [a[t, t - off] for t in range(off, n)]
                assert got[h, off] == pytest.approx(sum(column) / len(column), abs=1e-6)
                assert share[h, off] == pytest.approx(sum(column) / n, abs=1e-6)
            assert share[h].sum() == pytest.approx(1.0, abs=1e-6)
            if w is not None:
                assert (got[h, w:] == 0).all()


def test_offset_shares_refuse_a_profile_shorter_than_the_context():
    with pytest.raises(ValueError, match="whole context"):
        offset_shares(np.zeros(10), 12)
