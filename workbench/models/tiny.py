"""Tiny random Hugging Face models, written to a folder.

They exercise the real loading path (a Hugging Face folder with config, safetensors and
tokenizer.json) without any download: tests, and `make demo` before an organism is shipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from workbench.models.word_tokenizer import build_word_tokenizer

TinyArch = Literal["llama", "gpt2", "qwen2"]
TINY_ARCHS: tuple[str, ...] = ("llama", "gpt2", "qwen2")


def tiny_vocab(size: int) -> list[str]:
    return [f"w{i}" for i in range(size - 4)]


def tiny_config(arch: TinyArch, vocab_size: int = 64, n_layers: int = 2, n_ctx: int = 256):
    """A small config per architecture: Llama with GQA + RoPE, GPT-2 absolute, Qwen2 GQA + biases."""
    if arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_ctx,
            bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
        )
    if arch == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=vocab_size, n_embd=64, n_layer=n_layers, n_head=4, n_positions=n_ctx,
            bos_token_id=1, eos_token_id=2, pad_token_id=3,
        )
    if arch == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=n_ctx,
            bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False,
        )
    raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHS}")


def build_tiny_model(folder: str | Path, arch: TinyArch = "llama", seed: int = 0, **config_kwargs) -> Path:
    """Write a randomly initialised model and a word tokenizer to ``folder``; return the folder."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(arch, **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    build_word_tokenizer(tiny_vocab(config.vocab_size)).save_pretrained(str(folder))
    return folder
