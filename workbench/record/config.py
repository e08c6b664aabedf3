"""Recorder settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Backend = Literal["auto", "triton", "torch", "eager"]


@dataclass(frozen=True)
class RecorderConfig:
    """What to record and how.

    backend: "triton" (CUDA kernels), "torch" (chunked CPU/GPU path, O(N x chunk) memory),
    "eager" (the bridge's own N x N attention via hook_pattern; short prompts, keeps the
    full patterns for pictures), or "auto" (triton on CUDA, torch otherwise).
    """

    backend: Backend = "auto"
    first_k: int = 1  # sink mass on keys j < first_k (position 0 is BOS when the tokenizer prepends it)
    window: int = 16  # local mass on the last `window` keys
    columns: bool = True  # per-key attention received and the pooled map (kernel pass B)
    pool: int = 64  # pooled-map block size
    # Keep the block-pooled map with the column statistics. Only the live pattern view reads it (app/live.py);
    # at 128k tokens it is 16 MiB per head (16 GiB per record of an 8B model), so the families record without.
    pooled: bool = True
    chunk: int = 256  # query chunk of the torch backend
    layers: tuple[int, ...] | None = None  # record only these layers (all by default)
    keep_patterns: bool = False  # eager backend only: keep the full [B, H, N, N] patterns
    eager_max_tokens: int = 4096  # refuse the eager backend above this many tokens
    # Keep the post-RoPE queries and keys (O(N x d) per layer): any single attention
    # probability can then be recomputed exactly from them and the LSE (echo, induction,
    # retrieval and detector scores at long context use this).
    capture_qk: bool = False
    # Before the instrumented core is trusted on a model, check it against the bridge's own attention
    # on a short probe, layer by layer (workbench.record.self_check); cached per model. Turning it off
    # is at the user's risk: an architecture the adapters do not know would give wrong numbers.
    self_check: bool = True

    def resolved_backend(self, device_type: str) -> str:
        if self.backend == "auto":
            return "triton" if device_type == "cuda" else "torch"
        return self.backend
