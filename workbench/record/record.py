"""What a recorded forward pass leaves behind: per-layer, per-head attention statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.kernels import AttentionStats

PER_QUERY = ("lse", "entropy", "argmax", "pmax", "first_k_mass", "window_mass")
PER_KEY = ("col_sum", "col_max")


@dataclass
class AttentionRecord:
    """Statistics of one forward pass. ``layers[l]`` is None for layers not recorded."""

    tokens: torch.Tensor  # [B, N] on CPU
    layers: list[AttentionStats | None]
    backend: str
    patterns: dict[int, torch.Tensor] = field(default_factory=dict)  # eager + keep_patterns only
    # capture_qk only: layer -> (q [B, H, N, D], k [B, Hkv, N, D], scale), post-RoPE, on CPU
    qk: dict[int, tuple[torch.Tensor, torch.Tensor, float]] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[-1])

    @property
    def recorded_layers(self) -> list[int]:
        return [i for i, s in enumerate(self.layers) if s is not None]

    def layer(self, layer: int) -> AttentionStats:
        """The statistics of one recorded layer (ValueError when ``layer`` was not recorded)."""
        stats = self.layers[layer]
        if stats is None:
            raise ValueError(f"layer {layer} was not recorded")
        return stats

    def stack(self, name: str) -> torch.Tensor:
        """One statistic for every recorded layer: ``[L_recorded, B, H, ...]``."""
        values = [getattr(s, name) for s in self.layers if s is not None]
        if any(v is None for v in values):
            raise ValueError(f"statistic {name!r} was not recorded (set columns=True for per-key statistics)")
        return torch.stack(values)

    def attention_at(self, layer: int, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor:
        """Exact probabilities p[b, h, m] = A[query_pos[m], key_pos[m]] for every batch item and head.

        Recomputed from the captured queries/keys and the stored LSE (p = exp(scale q.k - lse)),
        so no N x N pattern is needed. Pairs with key_pos > query_pos (not visible) give 0.
        """
        if layer not in self.qk:
            raise ValueError(f"layer {layer} has no captured queries/keys: record with capture_qk=True")
        stats = self.layers[layer]
        if stats is None:
            raise ValueError(f"layer {layer} was not recorded")
        q, k, scale = self.qk[layer]
        qi = torch.as_tensor(query_pos, dtype=torch.long)
        kj = torch.as_tensor(key_pos, dtype=torch.long)
        group = q.shape[1] // k.shape[1]
        kk = k.repeat_interleave(group, dim=1) if group > 1 else k
        logits = (q[:, :, qi, :].double() * kk[:, :, kj, :].double()).sum(-1) * scale
        p = torch.exp(logits - stats.lse[:, :, qi].double())
        return torch.where(kj <= qi, p, torch.zeros_like(p)).float()

    def col_mean(self, layer: int) -> torch.Tensor:
        """Mean attention each key receives from the queries that can see it: ``[B, H, N]``."""
        stats = self.layers[layer]
        if stats is None or stats.col_mean is None:
            raise ValueError(f"layer {layer} has no column statistics in this record")
        return stats.col_mean
