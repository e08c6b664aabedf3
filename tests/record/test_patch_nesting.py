"""Instrumented attention restores exactly what was there: nested recorders, layer subsets, caches."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench.models import load_model
from workbench.record import AttentionRecorder, patch, record_attention


def _tokens(n=40, seed=0):
    return torch.randint(4, 60, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["llama", "gptj"])
def test_an_inner_recorder_leaves_the_outer_one_recording(arch, tiny_model_dir):
    model = load_model(tiny_model_dir(arch, peaked=True), device="cpu")
    with AttentionRecorder(model, backend="torch") as outer:
        model.logits(_tokens())
        with AttentionRecorder(model, backend="torch") as inner, torch.no_grad():
            model.logits(_tokens(seed=1))
        assert inner.last.recorded_layers == [0, 1]
        model.logits(_tokens(seed=2))
        assert outer.last.recorded_layers == [0, 1]  # still recording after the inner block
    assert not patch._ROUTES and "forward" not in model.bridge.blocks[0].attn.__dict__


@pytest.mark.parametrize("arch", ["mistral_window", "gemma2"])
def test_recording_a_subset_of_layers_keeps_every_window(arch, tiny_model_dir):
    """Hugging Face builds no mask while the recorder is on, so unrecorded layers must window themselves."""
    model = load_model(tiny_model_dir(arch, peaked=True), device="cpu")
    tokens = _tokens(60)
    want = model.logits(tokens)
    for layers in ((0,), (1,)):
        got, rec = record_attention(model, tokens, backend="torch", layers=layers)
        assert (got - want).abs().max() < 1e-4
        assert rec.recorded_layers == list(layers)


def test_a_gptj_step_with_the_models_own_kv_cache_matches_the_full_forward(tiny_model_dir):
    """GPT-J's module updates its cache itself and hands the core every cached key: the step is exact."""
    model = load_model(tiny_model_dir("gptj", peaked=True), device="cpu")
    tokens = _tokens(24)
    want = model.logits(tokens)[:, 20:]
    _, cache = model.bridge(tokens[:, :20], return_type="logits_and_cache")
    with AttentionRecorder(model, backend="torch") as rec:
        got = model.bridge(tokens[:, 20:], past_key_values=cache)
    assert (got - want).abs().max() < 1e-4
    assert rec.last.layers[0].q_offset == 20 and rec.last.layers[0].n_keys == 24


def test_uniform_ablation_on_two_hf_models_with_different_attention_at_once(tiny_model_dir):
    from workbench.interventions import ablate_heads_hf

    folder = str(tiny_model_dir("llama", peaked=True))
    eager = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    sdpa = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    tokens = _tokens(30)
    with torch.no_grad():
        with ablate_heads_hf(eager, ["L0H1"], "uniform"):
            alone = eager(tokens).logits
        with ablate_heads_hf(eager, ["L0H1"], "uniform"):
            with ablate_heads_hf(sdpa, [], "uniform"):
                pass
            after_inner = eager(tokens).logits
    assert torch.equal(alone, after_inner)
