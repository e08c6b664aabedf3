"""load_model(folder) must reproduce the Hugging Face model's own logits and config geometry."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from workbench.models import load_model

# float32 on CPU: the bridge re-implements attention with the same ops in a different order,
# so we allow a few ulps of accumulated drift over 2 layers (observed ~1e-7).
ATOL = 1e-4


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_logits_match_hugging_face(tiny_model_dir, arch):
    folder = tiny_model_dir(arch)
    model = load_model(folder, device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval()
    torch.manual_seed(1)
    tokens = torch.randint(4, hf.config.vocab_size, (2, 37))
    with torch.no_grad():
        ours = model.logits(tokens)
        ref = hf(tokens).logits
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=ATOL), (ours - ref).abs().max()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_geometry_matches_config(tiny_model_dir, arch):
    folder = tiny_model_dir(arch)
    geo = load_model(folder, device="cpu").geometry
    cfg = AutoConfig.from_pretrained(str(folder))
    n_heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    assert geo.n_layers == (getattr(cfg, "num_hidden_layers", None) or cfg.n_layer)
    assert geo.n_heads == n_heads
    assert geo.n_kv_heads == getattr(cfg, "num_key_value_heads", n_heads)
    d_model = getattr(cfg, "hidden_size", None) or cfg.n_embd
    assert geo.d_model == d_model
    assert geo.d_head == d_model // n_heads
    group = geo.n_heads // geo.n_kv_heads
    assert list(geo.head_to_kv) == [h // group for h in range(geo.n_heads)]
    if arch == "gpt2":
        assert geo.positional.kind == "absolute"
    else:
        assert geo.positional.kind == "rope"
        assert geo.positional.rope_base == cfg.rope_parameters["rope_theta"]
        assert geo.positional.rope_dims == geo.d_head
        assert geo.n_kv_heads < geo.n_heads  # the tiny Llama and Qwen2 use GQA


def test_bos_is_detected_and_prepended(tiny_llama):
    geo = tiny_llama.geometry
    assert geo.bos.prepends and geo.bos.token == "<bos>"
    tokens = tiny_llama.to_tokens("w1 w2 w3")
    assert tokens[0, 0].item() == geo.bos.token_id
    assert tiny_llama.to_str_tokens(tokens) == ["<bos>", "w1", "w2", "w3"]
    assert tiny_llama.to_tokens("w1 w2", prepend_bos=False)[0].tolist() == tokens[0, 1:3].tolist()
