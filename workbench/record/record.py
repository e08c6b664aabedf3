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

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[-1])

    @property
    def recorded_layers(self) -> list[int]:
        return [i for i, s in enumerate(self.layers) if s is not None]

    def stack(self, name: str) -> torch.Tensor:
        """One statistic for every recorded layer: ``[L_recorded, B, H, ...]``."""
        values = [getattr(s, name) for s in self.layers if s is not None]
        if any(v is None for v in values):
            raise ValueError(f"statistic {name!r} was not recorded (set columns=True for per-key statistics)")
        return torch.stack(values)

    def col_mean(self, layer: int) -> torch.Tensor:
        """Mean attention each key receives from the queries that can see it: ``[B, H, N]``."""
        stats = self.layers[layer]
        if stats is None or stats.col_mean is None:
            raise ValueError(f"layer {layer} has no column statistics in this record")
        return stats.col_mean
