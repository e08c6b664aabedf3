from __future__ import annotations

import torch

from workbench.interventions.kv_budget import cache_fraction, kv_budget, streaming_heads, streaming_mask
from workbench.models import load_model
from workbench.models.generate import greedy_generate
from workbench.models.heads import Head
from workbench.record import AttentionRecorder, record_attention


def test_streaming_mask_shape():
    m = streaming_mask(6, 6, sink=1, recent=2)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 1, 0], [1, 0, 0, 0, 1, 1]],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)
    assert cache_fraction(100, 1, 4, 4, 6) == (100 + 3 * 10) / 400


def test_streaming_heads_only_see_their_window(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    tokens = torch.randint(4, 60, (1, 40), generator=torch.Generator().manual_seed(0))
    ref = model.logits(tokens)
    with kv_budget(model, model.geometry.all_heads(), sink=2, recent=3):  # every head full: no change
        assert torch.equal(model.logits(tokens), ref)
    with streaming_heads(model, {Head(1, 2): (2, 3)}):
        _, rec = record_attention(model, tokens, backend="eager", keep_patterns=True)
        changed = model.logits(tokens)
    p = rec.patterns[1][0, 2]
    allowed = streaming_mask(40, 40, 2, 3)
    assert (p[~allowed] == 0).all() and torch.allclose(p.sum(-1), torch.ones(40))
    assert not torch.equal(changed, ref)
    assert torch.equal(model.logits(tokens), ref)  # hooks removed


def test_greedy_generate_matches_argmax_loop(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    prompt = torch.tensor([[1, 5, 9, 12]])
    out = greedy_generate(model, prompt, 4)
    seq = prompt
    for _ in range(4):
        seq = torch.cat([seq, model.logits(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, 4:])


def test_instrumented_greedy_generation_matches_eager(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    prompt = torch.randint(4, 60, (2, 30), generator=torch.Generator().manual_seed(2))
    with AttentionRecorder(model, layers=(), columns=False):
        instrumented = greedy_generate(model, prompt, 5)
    assert torch.equal(instrumented, greedy_generate(model, prompt, 5))


def test_a_full_query_head_keeps_its_whole_kv_head(tiny_model_dir):
    """GQA (4 query heads, 2 KV heads): L0H0 on the full cache keeps KV head 0, so L0H1 (same KV head)
    sees everything too, while L0H2/L0H3 (KV head 1) stream. Engines cannot split a KV head."""
    model = load_model(tiny_model_dir("llama"), device="cpu")
    tokens = torch.randint(4, 60, (1, 40), generator=torch.Generator().manual_seed(0))
    _, base = record_attention(model, tokens, backend="eager", keep_patterns=True)
    with kv_budget(model, ["L0H0"], sink=2, recent=3):
        _, rec = record_attention(model, tokens, backend="eager", keep_patterns=True)
    p, p0 = rec.patterns[0][0], base.patterns[0][0]
    torch.testing.assert_close(p[:2], p0[:2])  # KV head 0: both query heads unchanged
    allowed = streaming_mask(40, 40, 2, 3)
    assert (p[2:, ~allowed] == 0).all()  # KV head 1: both query heads stream


def test_kv_heads_are_ranked_by_max_or_mean_of_their_query_heads(tiny_llama):
    import numpy as np

    from workbench.interventions.kv_budget import kv_head_ranking

    scores = np.array([[0.9, 0.0, 0.5, 0.5], [0.1, 0.2, np.nan, 0.3]])  # [L, H]; KV head = h // 2
    assert kv_head_ranking(scores, tiny_llama.geometry, "max")[:2] == [(0, 0), (0, 1)]
    assert kv_head_ranking(scores, tiny_llama.geometry, "mean")[:2] == [(0, 1), (0, 0)]


def test_cache_share_is_counted_per_kv_head():
    # 2 of 8 KV heads full at 100 tokens, the rest 4 + 6: the share counts KV heads, not query heads
    assert cache_fraction(100, 2, 8, 4, 6) == (2 * 100 + 6 * 10) / 800
