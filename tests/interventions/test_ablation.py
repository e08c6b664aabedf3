"""Head ablation: zero, mean and uniform modes, GQA, and hook cleanup on exceptions."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import HeadIndexError, WorkbenchError
from workbench.interventions import ablate_heads, ablated_logits, head_means


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama


@pytest.fixture(scope="module")
def tokens(model):
    g = torch.Generator().manual_seed(0)
    return torch.randint(4, model.geometry.vocab_size, (2, 12), generator=g)


def _capture(model, tokens, name):
    store = {}

    def grab(x, hook):
        store["x"] = x.detach().clone()

    with model.bridge.hooks(fwd_hooks=[(name, grab)]):
        logits = model.logits(tokens)
    return logits, store["x"]


def _no_hooks_left(model) -> bool:
    return all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.bridge.hook_points())


def test_geometry_is_gqa(model):
    assert model.geometry.n_kv_heads < model.geometry.n_heads


def test_zero_ablation_zeroes_only_that_head(model, tokens):
    base_logits, base_z = _capture(model, tokens, "blocks.1.attn.hook_z")
    with ablate_heads(model, "L1H2", "zero") as heads:
        assert [str(h) for h in heads] == ["L1H2"]
        logits, z = _capture(model, tokens, "blocks.1.attn.hook_z")
    assert torch.all(z[:, :, 2] == 0)
    others = [h for h in range(model.geometry.n_heads) if h != 2]
    torch.testing.assert_close(z[:, :, others], base_z[:, :, others])
    assert not torch.allclose(logits, base_logits)
    assert _no_hooks_left(model)


def test_mean_ablation_uses_reference_mean(model, tokens):
    means = head_means(model, tokens)
    assert set(means) == set(range(model.geometry.n_layers))
    assert means[0].shape == (model.geometry.n_heads, model.geometry.d_head)
    _, z0 = _capture(model, tokens, "blocks.0.attn.hook_z")
    torch.testing.assert_close(means[0], z0.mean(dim=(0, 1)), rtol=1e-5, atol=1e-6)
    with ablate_heads(model, [(0, 1), (0, 3)], "mean", means=means):
        _, z = _capture(model, tokens, "blocks.0.attn.hook_z")
    for h in (1, 3):
        torch.testing.assert_close(z[:, :, h], means[0][h].expand_as(z[:, :, h]))
    torch.testing.assert_close(z[:, :, 0], z0[:, :, 0])
    # Computing the means from a reference gives the same result.
    a = ablated_logits(model, tokens, "L0H1,L0H3", "mean", means=means)
    b = ablated_logits(model, tokens, "L0H1,L0H3", "mean", reference=tokens)
    torch.testing.assert_close(a, b)


def test_mean_ablation_mask_excludes_padding(model, tokens):
    mask = torch.ones_like(tokens)
    mask[:, 6:] = 0
    masked = head_means(model, tokens, layers=[0], mask=mask)
    short = head_means(model, tokens[:, :6], layers=[0])
    torch.testing.assert_close(masked[0], short[0], rtol=1e-5, atol=1e-6)


def test_mean_ablation_needs_means_or_reference(model, tokens):
    with pytest.raises(WorkbenchError, match="reference"):
        with ablate_heads(model, "L0H0", "mean"):
            pass
    assert _no_hooks_left(model)


def test_uniform_ablation_makes_attention_uniform_per_query_head(model, tokens):
    _, base_pattern = _capture(model, tokens, "blocks.1.attn.hook_pattern")
    with ablate_heads(model, "L1H0", "uniform"):
        _, pattern = _capture(model, tokens, "blocks.1.attn.hook_pattern")
    n = tokens.shape[1]
    expected = torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None]
    torch.testing.assert_close(pattern[:, 0], expected.expand_as(pattern[:, 0]), atol=1e-4, rtol=0)
    # Head 1 shares head 0's KV head under GQA, and must be untouched.
    geo = model.geometry
    assert geo.kv_head(0) == geo.kv_head(1)
    torch.testing.assert_close(pattern[:, 1], base_pattern[:, 1])


def test_uniform_needs_positive_epsilon(model):
    with pytest.raises(WorkbenchError, match="epsilon"):
        with ablate_heads(model, "L0H0", "uniform", epsilon=0.0):
            pass


def test_hooks_removed_on_exception(model, tokens):
    base = model.logits(tokens)
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_heads(model, "L0H0,L1H3", "zero"):
            assert not _no_hooks_left(model)
            raise RuntimeError("boom")
    assert _no_hooks_left(model)
    torch.testing.assert_close(model.logits(tokens), base)


def test_empty_head_list_is_a_no_op(model, tokens):
    base = model.logits(tokens)
    with ablate_heads(model, [], "zero"):
        torch.testing.assert_close(model.logits(tokens), base)


def test_whole_layer_and_bad_inputs(model, tokens):
    with ablate_heads(model, "L1", "zero") as heads:
        assert len(heads) == model.geometry.n_heads
    with pytest.raises(HeadIndexError):
        with ablate_heads(model, "L9H0", "zero"):
            pass
    with pytest.raises(WorkbenchError, match="mode"):
        with ablate_heads(model, "L0H0", "scramble"):  # type: ignore[arg-type]
            pass
    assert _no_hooks_left(model)


@pytest.mark.parametrize("mode", ["zero", "mean", "uniform"])
def test_hf_path_matches_the_bridge(model, tokens, mode):
    from transformers import AutoModelForCausalLM

    from workbench.interventions import ablate_heads_hf, head_means_hf

    # an independent copy: the bridge's own hf_model runs the bridge's attention, not Hugging Face's
    hf = AutoModelForCausalLM.from_pretrained(str(model.source.path), attn_implementation="sdpa").eval()

    def n_hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf.modules())

    before = n_hooks()
    means_bridge = head_means(model, tokens)
    means_hf = head_means_hf(hf, tokens)
    for layer in means_bridge:
        torch.testing.assert_close(means_hf[layer], means_bridge[layer], rtol=1e-4, atol=1e-5)
    heads = "L0H1,L1H0,L1H3"
    with ablate_heads(model, heads, mode, means=means_bridge):
        want = model.logits(tokens)
    with torch.no_grad(), ablate_heads_hf(hf, heads, mode, means=means_hf):
        got = hf(input_ids=tokens).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=tokens).logits, model.logits(tokens), rtol=1e-4, atol=1e-4)
    assert n_hooks() == before


def test_hf_path_removes_hooks_on_exception(model, tokens):
    from transformers import AutoModelForCausalLM

    from workbench.interventions import ablate_heads_hf

    with pytest.raises(WorkbenchError, match="bridge"):
        with ablate_heads_hf(model.hf_model, "L0H0", "uniform"):
            pass
    hf = AutoModelForCausalLM.from_pretrained(str(model.source.path), attn_implementation="sdpa").eval()
    impl = hf.config._attn_implementation
    before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf.modules())
    with pytest.raises(RuntimeError, match="boom"):
        with ablate_heads_hf(hf, "L0H0,L1H1", "uniform"):
            raise RuntimeError("boom")
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in hf.modules()) == before
    assert hf.config._attn_implementation == impl  # the uniform switch is undone on the exception
    with pytest.raises(WorkbenchError, match="means"):
        with ablate_heads_hf(hf, "L0H0", "mean"):
            pass
