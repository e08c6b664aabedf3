"""kvpress presses fed from local head labels instead of DuoAttention's downloaded patterns.

``DuoAttentionPress.post_init_from_model`` calls ``self.load_attention_pattern(model)`` (a cached
staticmethod that downloads ``config.json`` + ``full_attention_heads.tsv`` from the DuoAttention
repository for six checkpoints) and turns the scores into ``streaming_mask``: the lowest
``round(size * head_compression_ratio)`` KV heads stream. Overriding ``load_attention_pattern`` in
a subclass keeps kvpress's own thresholding, masking (``compress`` -> ``masked_key_indices`` ->
``attention_patch``) and compression-ratio accounting untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from kvpress.presses.duo_attention_press import DuoAttentionPress

from kvpress_bench.pattern import Pattern, load_pattern


@dataclass
class ScoresDuoAttentionPress(DuoAttentionPress):
    """DuoAttentionPress with the head scores ([n_layers, n_kv_heads], high = full) and the
    sink/recent sizes given directly."""

    scores: Any = None
    sink: int = 4
    recent: int = 32

    def load_attention_pattern(self, model):  # overrides the downloading staticmethod
        scores = np.asarray(self.scores, dtype=float)
        want = (model.config.num_hidden_layers, model.config.num_key_value_heads)
        if scores.shape != want:
            raise ValueError(f"scores have shape {scores.shape}, the model needs {want}")
        return int(self.sink), int(self.recent), np.clip(scores, 0, 1)


@dataclass
class AtlasDuoAttentionPress(DuoAttentionPress):
    """DuoAttentionPress reading the workbench's export (``workbench export RUN --format
    duo-attention --out DIR``) from ``pattern_dir``: its scores and its sink/recent sizes."""

    pattern_dir: str | Path = ""
    pattern: Pattern | None = field(init=False, default=None)

    def load_attention_pattern(self, model):  # overrides the downloading staticmethod
        if not self.pattern_dir:
            raise ValueError("AtlasDuoAttentionPress needs pattern_dir (the exported folder)")
        self.pattern = load_pattern(self.pattern_dir, model.config.num_hidden_layers, model.config.num_key_value_heads)
        return self.pattern.sink_size, self.pattern.recent_size, self.pattern.scores


def random_scores(n_layers: int, n_kv_heads: int, seed: int) -> np.ndarray:
    """A random ranking of the KV heads as scores (for the random-heads baseline)."""
    rng = np.random.default_rng(seed)
    return rng.permutation(n_layers * n_kv_heads).reshape(n_layers, n_kv_heads) / max(n_layers * n_kv_heads - 1, 1)
