"""TransformerLens habits on the workbench `Model`: token strings of a text, patterns from a cache."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError


def test_to_str_tokens_takes_a_string_or_ids(tiny_llama):
    text = "w1 w2 w3"
    assert tiny_llama.to_str_tokens(text) == tiny_llama.to_str_tokens(tiny_llama.to_tokens(text))
    assert tiny_llama.to_str_tokens(text)[1:] == ["w1", "w2", "w3"]  # BOS first, as to_tokens


def test_run_with_cache_gives_patterns_that_match_the_model(tiny_llama):
    logits, cache = tiny_llama.run_with_cache("w1 w2 w3 w4 w5")
    pattern = cache["pattern", 0]
    n = tiny_llama.to_tokens("w1 w2 w3 w4 w5").shape[1]
    assert pattern.shape == (1, tiny_llama.geometry.n_heads, n, n)
    torch.testing.assert_close(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), atol=1e-5, rtol=0)  # rows are distributions
    assert torch.all(pattern.triu(1) == 0)  # causal
    torch.testing.assert_close(logits, tiny_llama.logits(tiny_llama.to_tokens("w1 w2 w3 w4 w5")))


def test_run_with_cache_refuses_a_long_context(tiny_llama, monkeypatch):
    import workbench.models.model as model_module

    monkeypatch.setattr(model_module, "CACHE_MAX_TOKENS", 4)
    with pytest.raises(WorkbenchError, match="record_attention"):
        tiny_llama.run_with_cache("w1 w2 w3 w4 w5")
