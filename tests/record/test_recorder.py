"""The recorder: same logits as the plain model, statistics equal to the full pattern's, no N x N tensor."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from workbench.errors import UnsupportedModelError, WorkbenchError
from workbench.models import load_model
from workbench.record import AttentionRecorder, record_attention

# fp32 on CPU: the chunked core sums the softmax in a different order than the bridge's
# matmul/softmax; observed differences are ~1e-6, we allow 1e-4 on logits of size ~1.
LOGIT_ATOL = 1e-4
STAT_ATOL = 1e-5


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def model(request, tiny_model_dir):
    return load_model(tiny_model_dir(request.param), device="cpu")


def _tokens(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, model.geometry.vocab_size, (2, n), generator=g)


def test_logits_unchanged_and_model_restored(model):
    tokens = _tokens(model, 150)
    ref = model.logits(tokens)
    logits, record = record_attention(model, tokens, backend="torch", chunk=32, pool=16)
    assert torch.allclose(logits, ref, atol=LOGIT_ATOL), (logits - ref).abs().max()
    assert record.recorded_layers == list(range(model.geometry.n_layers))
    assert record.tokens.shape == tokens.shape
    # restored: the plain forward fires hook_pattern again and gives the same logits
    fired = []
    model.bridge.blocks[0].attn.hook_pattern.add_hook(lambda t, hook: fired.append(t.shape))
    try:
        again = model.logits(tokens)
    finally:
        model.bridge.reset_hooks()
    assert fired and torch.equal(again, ref)
    assert "forward" not in model.bridge.blocks[0].attn.__dict__


def test_statistics_equal_the_bridge_pattern(model):
    """Per-head statistics from the instrumented core equal those computed from hook_pattern."""
    tokens = _tokens(model, 90, seed=1)
    _, fast = record_attention(model, tokens, backend="torch", chunk=16, pool=16, window=8, first_k=2)
    _, eager = record_attention(model, tokens, backend="eager", pool=16, window=8, first_k=2, keep_patterns=True)
    for layer in range(model.geometry.n_layers):
        a, b = fast.layers[layer], eager.layers[layer]
        for name in ("lse", "entropy", "pmax", "first_k_mass", "window_mass", "col_sum", "col_max", "pooled"):
            x, y = getattr(a, name), getattr(b, name)
            assert torch.allclose(x, y, atol=STAT_ATOL * max(1.0, float(y.abs().max()))), (layer, name, (x - y).abs().max())
        agree = (a.argmax == b.argmax).float().mean()
        assert agree > 0.99  # ties between near-equal keys may flip in the last ulp
        pattern = eager.patterns[layer]
        assert pattern.shape == (2, model.geometry.n_heads, 90, 90)
        assert torch.allclose(pattern.sum(-2), b.col_sum, atol=1e-5)


class _LargestTensor(TorchDispatchMode):
    """Sees every aten op's outputs: the largest tensor created while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_n_by_n_tensor_is_allocated(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    n = 512
    tokens = _tokens(model, n)[:1]
    with torch.no_grad():
        with _LargestTensor() as plain:
            model.logits(tokens)
        with AttentionRecorder(model, backend="torch", chunk=32, pool=64):
            with _LargestTensor() as recorded:
                model.logits(tokens)
    # The plain bridge builds [1, H, N, N] scores (and HF a [1, 1, N, N] mask); the recorder
    # must stay below N x N elements in every single tensor.
    assert plain.largest >= n * n
    assert recorded.largest < n * n, recorded.largest


def test_restored_after_an_exception(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    tokens = _tokens(model, 20)
    ref = model.logits(tokens)
    with pytest.raises(RuntimeError, match="boom"):
        with AttentionRecorder(model, backend="torch"):
            model.logits(tokens)
            raise RuntimeError("boom")
    attn = model.bridge.blocks[0].attn
    assert "forward" not in attn.__dict__
    assert all(not p.fwd_hooks for p in model.bridge.hook_dict.values())
    assert model.hf_model.config._attn_implementation == "eager"
    assert torch.equal(model.logits(tokens), ref)


def test_layer_selection_and_bad_layers(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    _, record = record_attention(model, _tokens(model, 30), backend="torch", layers=(1,))
    assert record.recorded_layers == [1]
    with pytest.raises(WorkbenchError, match=r"layers \[5\] out of range"):
        AttentionRecorder(model, layers=(5,))


def test_padding_is_refused(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    tokens = _tokens(model, 12)
    mask = torch.ones_like(tokens)
    mask[0, :3] = 0
    with AttentionRecorder(model, backend="torch"), pytest.raises(UnsupportedModelError, match="padding"):
        model.bridge(tokens, attention_mask=mask)


def test_eager_refuses_long_inputs(tiny_model_dir):
    model = load_model(tiny_model_dir("llama"), device="cpu")
    with (
        AttentionRecorder(model, backend="eager", eager_max_tokens=16),
        pytest.raises(WorkbenchError, match="limited to 16 tokens"),
    ):
        model.logits(_tokens(model, 40))


def test_attention_at_recomputes_single_entries(model):
    """Entries of A from captured q/k and the LSE equal the bridge's own full pattern."""
    tokens = _tokens(model, 70, seed=4)
    _, fast = record_attention(model, tokens, backend="torch", chunk=16, capture_qk=True)
    _, eager = record_attention(model, tokens, backend="eager", keep_patterns=True)
    qi = torch.tensor([0, 5, 69, 69, 40, 10])
    kj = torch.tensor([0, 4, 0, 69, 39, 20])  # the last pair is not visible (key after query)
    for layer in range(model.geometry.n_layers):
        got = fast.attention_at(layer, qi, kj)
        want = eager.patterns[layer][:, :, qi, kj]
        assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
        assert (got[..., -1] == 0).all()
