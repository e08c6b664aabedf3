from __future__ import annotations

import torch

from workbench.interventions.kv_budget import cache_fraction, kv_budget, streaming_heads, streaming_mask
from workbench.models import load_model
from workbench.models.generate import greedy_generate
from workbench.models.heads import Head
from workbench.record import record_attention


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
    assert torch.equal(greedy_generate(model, prompt, 5, instrumented=True), greedy_generate(model, prompt, 5))
