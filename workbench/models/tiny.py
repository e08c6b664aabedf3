"""Tiny random Hugging Face models, written to a folder.

They exercise the real loading path (a Hugging Face folder with config, safetensors and
tokenizer.json) without any download: tests, and `make demo` before an organism is shipped.

`TINY_ARCHS` covers the attention variants researchers meet: absolute positions (GPT-2), fused
QKV with partial rotary (GPT-NeoX/Pythia, Phi-3, Falcon, GPT-J), GQA/MQA, llama3 rope scaling,
sliding windows (Mistral, Phi-3, Gemma 2/3), logit soft-capping (Gemma 2), per-head q/k norms
(Qwen3, Gemma 3), one q norm across all heads (OLMo 2), per-layer rope bases (Gemma 3),
parallel blocks (StableLM, Cohere, Falcon). Each is small (hidden 64, 2 layers by default) but
drawn, with ``peaked=True``, with ``initializer_range`` 0.2 (and q/k norm gains of 3) so attention rows
are peaked: a wrong mask, a missing RoPE or a skipped norm changes the numbers well above test tolerances.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench.models.word_tokenizer import build_word_tokenizer

#: the sliding window of the tiny windowed models: shorter than the 48-token test sequences
TINY_WINDOW = 16
#: initializer_range of the tiny models (transformers' default 0.02 gives nearly uniform attention;
#: 0.2 gives median max-probabilities of ~0.3-0.6 per row on 48 tokens)
TINY_INIT = 0.2


def tiny_vocab(size: int) -> list[str]:
    return [f"w{i}" for i in range(size - 4)]


def _common(vocab_size: int, n_layers: int, n_ctx: int) -> dict[str, Any]:
    return dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        max_position_embeddings=n_ctx,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )


def _alternating(n_layers: int, first: str = "sliding_attention") -> list[str]:
    other = "full_attention" if first == "sliding_attention" else "sliding_attention"
    return [first if i % 2 == 0 else other for i in range(n_layers)]


def _gpt2(v: int, n: int, ctx: int):
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=v, n_embd=64, n_layer=n, n_head=4, n_positions=ctx, bos_token_id=1, eos_token_id=2, pad_token_id=3
    )


def _gpt_neox(v: int, n: int, ctx: int):
    from transformers import GPTNeoXConfig

    c = _common(v, n, ctx)
    c["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}
    return GPTNeoXConfig(**c, use_parallel_residual=True)


def _llama(v: int, n: int, ctx: int):
    from transformers import LlamaConfig

    return LlamaConfig(**_common(v, n, ctx), num_key_value_heads=2)


def _llama31(v: int, n: int, ctx: int):
    from transformers import LlamaConfig

    # original_max_position_embeddings 32 (real: 8192) so the llama3 scaling changes the low
    # frequencies of a 16-dim head: a geometry that reads only rope_theta is visibly wrong.
    rope = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    }
    return LlamaConfig(**_common(v, n, ctx), num_key_value_heads=2, rope_parameters=rope)


def _mistral(v: int, n: int, ctx: int, window: int | None = None):
    from transformers import MistralConfig

    return MistralConfig(**_common(v, n, ctx), num_key_value_heads=2, sliding_window=window)


def _qwen2(v: int, n: int, ctx: int):
    from transformers import Qwen2Config

    return Qwen2Config(**_common(v, n, ctx), num_key_value_heads=2)


def _qwen3(v: int, n: int, ctx: int):
    from transformers import Qwen3Config

    return Qwen3Config(**_common(v, n, ctx), num_key_value_heads=2, head_dim=16)


def _gemma(v: int, n: int, ctx: int):
    from transformers import GemmaConfig

    return GemmaConfig(**_common(v, n, ctx), num_key_value_heads=2, head_dim=16)


def _gemma2(v: int, n: int, ctx: int):
    from transformers import Gemma2Config

    return Gemma2Config(
        **_common(v, n, ctx),
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=TINY_WINDOW,
        attn_logit_softcapping=5.0,
        final_logit_softcapping=30.0,
        query_pre_attn_scalar=16,
        layer_types=_alternating(n),
    )


def _gemma3(v: int, n: int, ctx: int):
    from transformers import Gemma3TextConfig

    rope = {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    }
    c = Gemma3TextConfig(
        **_common(v, n, ctx),
        num_key_value_heads=2,
        head_dim=16,
        sliding_window=TINY_WINDOW,
        query_pre_attn_scalar=16,
        layer_types=_alternating(n),
        rope_parameters=rope,
    )
    c.architectures = ["Gemma3ForCausalLM"]
    return c


def _olmo2(v: int, n: int, ctx: int):
    from transformers import Olmo2Config

    return Olmo2Config(**_common(v, n, ctx), num_key_value_heads=2)


def _phi3(v: int, n: int, ctx: int):
    from transformers import Phi3Config

    c = _common(v, n, ctx)
    c["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    return Phi3Config(**c, num_key_value_heads=2, sliding_window=TINY_WINDOW)


def _gptj(v: int, n: int, ctx: int):
    from transformers import GPTJConfig

    return GPTJConfig(
        vocab_size=v,
        n_embd=64,
        n_layer=n,
        n_head=4,
        n_positions=ctx,
        rotary_dim=8,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )


def _falcon(v: int, n: int, ctx: int):
    from transformers import FalconConfig

    c = _common(v, n, ctx)
    c.pop("intermediate_size")
    return FalconConfig(**c, multi_query=True, parallel_attn=True, alibi=False, bias=False)


def _stablelm(v: int, n: int, ctx: int):
    from transformers import StableLmConfig

    c = _common(v, n, ctx)
    c["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}
    return StableLmConfig(**c, num_key_value_heads=2)


def _cohere(v: int, n: int, ctx: int):
    from transformers import CohereConfig

    return CohereConfig(**_common(v, n, ctx), num_key_value_heads=2)


_CONFIGS: dict[str, Callable[[int, int, int], Any]] = {
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "llama": _llama,
    "llama31": _llama31,
    "mistral": _mistral,
    "mistral_window": lambda v, n, ctx: _mistral(v, n, ctx, window=TINY_WINDOW),
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "gemma": _gemma,
    "gemma2": _gemma2,
    "gemma3": _gemma3,
    "olmo2": _olmo2,
    "phi3": _phi3,
    "gptj": _gptj,
    "falcon": _falcon,
    "stablelm": _stablelm,
    "cohere": _cohere,
}
TINY_ARCHS: tuple[str, ...] = tuple(_CONFIGS)
TinyArch = str


def tiny_config(arch: TinyArch, vocab_size: int = 64, n_layers: int = 2, n_ctx: int = 256):
    """A small config of one of `TINY_ARCHS` (hidden 64, 4 query heads, GQA where the family has it)."""
    if arch not in _CONFIGS:
        raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHS)}")
    return _CONFIGS[arch](vocab_size, n_layers, n_ctx)


_QK_NORM = re.compile(r"(^|\.)(q|k)_(norm|layernorm)\.weight$")


@torch.no_grad()
def _sharpen_qk_norms(model: torch.nn.Module) -> None:
    """Triple the gain of q/k norms (Qwen3, Gemma 3, OLMo 2): a norm pins |q| and |k| to the gain, so
    with unit gains those models' attention stayed nearly flat while the others were peaked. Gemma-style
    norms store gain - 1 (zeros at init): they get +2."""
    for name, param in model.named_parameters():
        if _QK_NORM.search(name):
            if bool((param == 0).all()):
                param.add_(2.0)
            else:
                param.mul_(3.0)


def build_tiny_model(folder: str | Path, arch: TinyArch = "llama", seed: int = 0, peaked: bool = False, **config_kwargs) -> Path:
    """Write a randomly initialised model and a word tokenizer to ``folder``; return the folder.

    ``peaked`` draws the weights with ``initializer_range`` `TINY_INIT` and triples q/k norm gains, so
    attention rows are peaked (the architecture matrix needs that: on near-uniform rows a wrong mask or
    a missing RoPE hardly shows). The default keeps transformers' own initialisation (0.02).
    """
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(arch, **config_kwargs)
    if peaked:
        config.initializer_range = TINY_INIT
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if peaked:
        _sharpen_qk_norms(model)
    model.save_pretrained(str(folder), safe_serialization=True)
    build_word_tokenizer(tiny_vocab(config.vocab_size)).save_pretrained(str(folder))
    return folder
