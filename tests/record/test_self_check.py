"""The recorder's self-check catches a core that mis-computes attention, on purpose broken three ways.

Each break reproduces a bug this project shipped before the check existed: the fused-QKV adapter
skipping RoPE (GPT-NeoX/Pythia), the sliding window read from the wrong place (Mistral), and a wrong
score scale. On the tiny models (peaked weights, see test_architectures) each moves the attention output
by 10-60%; the tolerance is 1e-4 relative in float32 (workbench.record.self_check).
"""

from __future__ import annotations

import pytest
import torch

from workbench.models import load_model
from workbench.models.attention_spec import LayerAttention
from workbench.record import AttentionRecorder, patch, record_attention
from workbench.record.self_check import CoreMismatchError, probe_length


@pytest.fixture
def fresh(tiny_model_dir):
    """A freshly loaded model (the self-check result is cached on the Model object)."""
    return lambda arch: load_model(tiny_model_dir(arch, peaked=True), device="cpu")


def _tokens(model):
    return torch.randint(4, model.geometry.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))


def test_dropped_rope_on_a_fused_qkv_bridge_is_caught(fresh, monkeypatch):
    model = fresh("gpt_neox")
    monkeypatch.setattr(patch, "bridge_kind", lambda attn: "joint_qkv")  # the old adapter: no RoPE
    with pytest.raises(CoreMismatchError, match="differs from the model's own attention at layer"):
        record_attention(model, _tokens(model), backend="torch")
    assert not model.core_checks  # a failed check is not cached


def test_dropped_sliding_window_is_caught(fresh, monkeypatch):
    model = fresh("mistral_window")
    monkeypatch.setattr(patch, "layer_specs", lambda bridge: [LayerAttention()] * 2)
    with pytest.raises(CoreMismatchError, match="relative error"):
        record_attention(model, _tokens(model), backend="torch")


def test_wrong_scale_is_caught_and_the_model_is_restored(fresh, monkeypatch):
    model = fresh("llama")
    tokens = _tokens(model)
    ref = model.logits(tokens)
    original = patch._rotary_forward

    def wrong_scale(attn, layer, core, spec, bridge=None):
        return original(attn, layer, lambda l, q, k, v, s, sp, off=0: core(l, q, k, v, 1.5 * s, sp, off), spec, bridge)

    monkeypatch.setattr(patch, "_rotary_forward", wrong_scale)
    with pytest.raises(CoreMismatchError):
        with AttentionRecorder(model, backend="torch"):
            pass
    assert "forward" not in model.bridge.blocks[0].attn.__dict__
    assert torch.equal(model.logits(tokens), ref)


def test_a_pass_is_cached_and_can_be_skipped(fresh, monkeypatch):
    model = fresh("gemma2")
    record_attention(model, _tokens(model), backend="torch")
    (check,) = model.core_checks.values()
    assert check.windows_exercised and check.n_tokens > 16 and check.worst[1] < check.tolerance
    calls = []
    monkeypatch.setattr("workbench.record.self_check.run_self_check", lambda *a: calls.append(a))
    record_attention(model, _tokens(model), backend="torch")
    assert not calls  # cached
    model.core_checks.clear()
    record_attention(model, _tokens(model), backend="torch", self_check=False)
    assert not calls and not model.core_checks  # skipped on request


def test_probe_crosses_the_windows():
    assert probe_length([LayerAttention()]) == (48, True)
    assert probe_length([LayerAttention(sliding_window=100)]) == (116, True)
    assert probe_length([LayerAttention(sliding_window=4096)]) == (1024, False)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("arch", ["llama", "gemma2", "phi3", "gptj", "qwen3"])
def test_half_precision_cores_pass_their_self_check(arch, dtype, tiny_model_dir):
    """A correct core must not be refused in half precision (observed worst 1.2e-2 bf16, 1.8e-3 fp16)."""
    model = load_model(tiny_model_dir(arch, peaked=True), device="cpu", dtype=dtype)
    record_attention(model, _tokens(model), backend="torch")
    (check,) = model.core_checks.values()
    assert check.worst[1] < check.tolerance / 2  # a margin of 2 at least


def test_a_bridge_that_cannot_run_its_own_attention_is_reported(tiny_model_dir):
    """OLMo 2's bridge fails in bfloat16 (TransformerLens mixes float32 norms with bf16 values): the
    self-check says so instead of crashing, and the core itself still runs when told to skip it."""
    model = load_model(tiny_model_dir("olmo2", peaked=True), device="cpu", dtype="bfloat16")
    with pytest.raises(CoreMismatchError, match="could not run the model's own attention"):
        record_attention(model, _tokens(model), backend="torch")
    logits, _ = record_attention(model, _tokens(model), backend="torch", self_check=False)
    assert torch.isfinite(logits).all()
