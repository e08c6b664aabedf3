"""The press runs inside kvpress: it masks the streaming heads' middle keys, changes the outputs of
streaming heads only, and the simulation agrees with its own limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kvpress_bench import runner
from kvpress_bench.pattern import write_pattern
from kvpress_bench.presses import AtlasDuoAttentionPress, ScoresDuoAttentionPress


def test_model_loads_with_sdpa_and_solves_the_needles(model, trials):
    assert model.config._attn_implementation == "sdpa"
    acc, frac = runner.press_accuracy(model, trials)
    assert frac == 1.0
    assert acc >= 0.875


def test_press_masks_exactly_the_streaming_heads_middle_keys(model, trials, tmp_path):
    scores = np.linspace(0, 1, 16).reshape(4, 4)  # the lowest 6 stream at ratio 6/16
    write_pattern(tmp_path, scores, 3, 10)
    press = AtlasDuoAttentionPress(head_compression_ratio=6 / 16, pattern_dir=str(tmp_path))
    trial = trials[0]
    n = len(trial.context)
    with press(model):
        from transformers import DynamicCache

        model.model(input_ids=torch.tensor([trial.context]), past_key_values=DynamicCache())
    streaming = {(l, k) for l in range(4) for k in range(4) if press.streaming_mask[l, k]}
    assert streaming == {(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)}
    for l, layer in enumerate(model.model.layers):
        idx = layer.self_attn.masked_key_indices
        got = {(int(h), int(s)) for _, h, s in zip(*idx)}
        want = {(k, s) for (ll, k) in streaming if ll == l for s in range(3, n - 10)}
        assert got == want, l
        layer.self_attn.masked_key_indices = None
    _, acc = runner.press_generate(model, trial, press)
    assert acc["kept"] == acc["total"] - 6 * (n - 13)
    assert acc["kept"] / acc["total"] == pytest.approx(runner.duo_cache_fraction(n, 10, 16, 3, 10))


def _head_outputs(model, trial, press):
    """Per-layer [n_heads, head_dim] attention outputs of the question's last token (o_proj input)."""
    got: dict[int, torch.Tensor] = {}
    hooks = []
    for l, layer in enumerate(model.model.layers):

        def pre(module, args, l=l):
            x = args[0]
            if x.shape[1] == runner.QUESTION_TOKENS:  # the question step, on the compressed cache
                got[l] = x[0, -1].view(model.config.num_attention_heads, -1).clone()

        hooks.append(layer.self_attn.o_proj.register_forward_pre_hook(pre))
    try:
        runner.press_generate(model, trial, press, max_new_tokens=1)
    finally:
        for h in hooks:
            h.remove()
    return got


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_press_changes_streaming_heads_and_not_full_heads(model, trials, tmp_path, layer):
    scores = np.ones((4, 4))
    scores[layer, [1, 3]] = 0.0  # two KV heads of one layer stream, all the others stay full
    write_pattern(tmp_path, scores, 4, 32)
    press = AtlasDuoAttentionPress(head_compression_ratio=2 / 16, pattern_dir=str(tmp_path))
    groups = model.config.num_attention_heads // model.config.num_key_value_heads
    stream_q = {q for kv in (1, 3) for q in range(kv * groups, (kv + 1) * groups)}
    changed = {q: 0 for q in range(model.config.num_attention_heads)}
    for trial in trials[:4]:
        base = _head_outputs(model, trial, None)
        comp = _head_outputs(model, trial, press)
        for l in range(layer):  # layers before the streaming one: untouched
            torch.testing.assert_close(comp[l], base[l], rtol=1e-5, atol=1e-6)
        for q in range(model.config.num_attention_heads):
            same = torch.allclose(comp[layer][q], base[layer][q], rtol=1e-5, atol=1e-6)
            if q in stream_q:
                changed[q] += int(not same)
            else:
                assert same, f"full head L{layer}H{q} changed"
    assert all(changed[q] > 0 for q in stream_q), changed


def test_random_scores_press_is_seeded(model):
    from kvpress_bench.presses import random_scores

    a, b = random_scores(4, 4, 1), random_scores(4, 4, 1)
    np.testing.assert_array_equal(a, b)
    p = ScoresDuoAttentionPress(head_compression_ratio=0.5, scores=a, sink=4, recent=32)
    p.post_init_from_model(model)
    assert int(p.streaming_mask.sum()) == 8


def test_simulation_limits(model, trials):
    trial = trials[0]
    ids = torch.tensor([trial.prompt])
    with torch.no_grad():
        plain = model(input_ids=ids, use_cache=False).logits
        with runner.simulated_budget(model, set(), 4, 32):
            none = model(input_ids=ids, use_cache=False).logits
        everyone = {(l, k) for l in range(4) for k in range(4)}
        with runner.simulated_budget(model, everyone, 0, len(trial.prompt)):  # a window over everything
            wide = model(input_ids=ids, use_cache=False).logits
        with runner.simulated_budget(model, everyone, 4, 32):
            narrow = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(none, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wide, plain, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(narrow[0, -1], plain[0, -1], atol=1e-3)
    # the first sink + recent positions see everything either way
    torch.testing.assert_close(narrow[0, :36], plain[0, :36], rtol=1e-5, atol=1e-5)


def test_uniform_press_fraction_is_measured(model, trials):
    from kvpress import SnapKVPress

    _, acc = runner.press_generate(model, trials[0], SnapKVPress(compression_ratio=0.5))
    assert acc["kept"] == 16 * int(len(trials[0].context) * 0.5)
