"""The recorder with the Triton backend (interpreter on CPU, the GPU when there is one) on the
windowed, soft-capped, fused-QKV and delegating architectures: logits equal the Hugging Face model's.

float32: 1e-4 on logits, as in tests/models/test_architectures.py.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM

from workbench.models import load_model
from workbench.record import record_attention

ARCHS = ["mistral_window", "gemma2", "gemma3", "phi3", "gpt_neox", "gptj", "falcon", "qwen3"]


@pytest.mark.parametrize("arch", ARCHS)
def test_triton_recorder_matches_the_model(arch, tiny_model_dir, triton_ok, device):
    folder = tiny_model_dir(arch, peaked=True)
    model = load_model(folder, device=device)
    hf = AutoModelForCausalLM.from_pretrained(str(folder), attn_implementation="eager").eval().to(device)
    tokens = torch.randint(4, model.geometry.vocab_size, (1, 48), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(device)
    with torch.no_grad():
        want = hf(tokens).logits
    logits, record = record_attention(model, tokens, backend="triton", pool=16)
    assert record.backend == "triton"
    assert (logits - want).abs().max() < 1e-4
    torch.testing.assert_close(record.layers[0].col_sum.sum(-1), torch.full((1, 4), 48.0), atol=1e-3, rtol=0)
