"""Temporal statistics computed layer by layer inside the pass equal the same statistics computed
after the pass from every layer's kept queries and keys (the earlier whole-record path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis.temporal import (
    TemporalConfig,
    analyze_temporal,
    ar_predictability,
    q_similarity,
    whole_context_profile,
)
from workbench.models import load_model
from workbench.models.attention_spec import layer_windows
from workbench.models.hooks import temporary_hooks
from workbench.record import AttentionRecorder


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral_window"])
def test_streamed_layers_equal_the_kept_record(arch, tiny_model_dir):
    model = load_model(tiny_model_dir(arch, peaked=True), device="cpu")
    cfg = TemporalConfig()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(4, 60, (48,), generator=g)
    report = analyze_temporal(model, [prompt], cfg)

    L = model.geometry.n_layers
    pre: dict[int, torch.Tensor] = {}

    def grab(layer):
        def fn(t, hook):
            pre[layer] = t.detach()[0].float()

        return fn

    points = [(model.bridge.blocks[l].attn.hook_q, grab(l)) for l in range(L)]
    with temporary_hooks(points), AttentionRecorder(model, capture_qk=True) as rec, torch.no_grad():
        model.logits(prompt.view(1, -1))
    record = rec.last
    windows = layer_windows(model.hf_model.config, L)
    for l in range(L):
        q_rot, k_rot, scale = record.qk[l]
        full = whole_context_profile(q_rot, k_rot, record.layer(l).lse, scale, windows[l])
        np.testing.assert_allclose(report.profiles[l, :, : min(48, cfg.max_offset)], full[:, : cfg.max_offset], atol=1e-6)
        ar, persist = ar_predictability(pre[l], cfg.ar_order, cfg.ar_ridge, cfg.fit_fraction)
        np.testing.assert_allclose(report.scores["ar_cos"][l], ar, atol=1e-9)
        np.testing.assert_allclose(report.scores["persistence_cos"][l], persist, atol=1e-9)
        post = q_similarity(q_rot[0].transpose(0, 1), cfg.window, cfg.stride)
        np.testing.assert_allclose(report.scores["q_sim_post"][l], post, atol=1e-9)


def test_a_layer_callback_needs_an_instrumented_backend(tiny_llama):
    with pytest.raises(Exception, match="on_layer needs an instrumented backend"):
        AttentionRecorder(tiny_llama, backend="eager", on_layer=lambda *a: None)
