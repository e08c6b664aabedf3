"""The DuoAttention-format pattern folder that ``workbench export RUN --format duo-attention`` writes.

    DIR/full_attention_heads.tsv   n_layers rows x n_kv_heads tab-separated floats in [0, 1]
                                   (high = full attention, i.e. a retrieval head)
    DIR/config.json                {"sink_size": int, "recent_size": int, "workbench": {...}}

This is the layout of mit-han-lab/duo-attention's ``attn_patterns/<model>/<run>/`` that kvpress's
``DuoAttentionPress.load_attention_pattern`` downloads; here it is read from a local folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TSV = "full_attention_heads.tsv"
CONFIG = "config.json"


class PatternError(ValueError):
    """The folder is not a usable DuoAttention-format pattern."""


@dataclass
class Pattern:
    scores: np.ndarray  # [n_layers, n_kv_heads] float in [0, 1]
    sink_size: int
    recent_size: int
    config: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    @property
    def workbench(self) -> dict[str, Any]:
        return dict(self.config.get("workbench") or {})

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.scores.shape)  # type: ignore[return-value]

    def streaming_set(self, head_compression_ratio: float) -> set[tuple[int, int]]:
        """The KV heads kvpress makes streaming at this ratio: the lowest round(size * ratio) scores
        (the same rule as ``DuoAttentionPress.post_init_from_model``)."""
        n = round(self.scores.size * head_compression_ratio)
        if n <= 0:
            return set()
        flat = np.argsort(self.scores, axis=None)[:n]
        rows, cols = np.unravel_index(flat, self.scores.shape)
        return {(int(r), int(c)) for r, c in zip(rows, cols)}

    def ranking(self) -> list[tuple[int, int]]:
        """KV heads best (most "full") first."""
        flat = np.argsort(-self.scores, axis=None, kind="stable")
        rows, cols = np.unravel_index(flat, self.scores.shape)
        return [(int(r), int(c)) for r, c in zip(rows, cols)]


def load_pattern(folder: str | Path, n_layers: int | None = None, n_kv_heads: int | None = None) -> Pattern:
    """Read and check a pattern folder; scores are clipped to [0, 1] as kvpress and
    duo_attn.utils.load_attn_pattern do (values outside are reported, not silently accepted, when
    they are far off)."""
    folder = Path(folder)
    tsv, cfg_path = folder / TSV, folder / CONFIG
    for p in (tsv, cfg_path):
        if not p.is_file():
            raise PatternError(f"{p} is missing (expected {TSV} and {CONFIG} in {folder})")
    config = json.loads(cfg_path.read_text())
    for key in ("sink_size", "recent_size"):
        if not isinstance(config.get(key), int) or config[key] < 0:
            raise PatternError(f"{cfg_path}: {key} must be a non-negative int, got {config.get(key)!r}")
    scores = np.loadtxt(tsv, dtype=float, delimiter="\t", ndmin=2)
    if not np.all(np.isfinite(scores)):
        raise PatternError(f"{tsv}: non-finite scores")
    if scores.min() < -1e-6 or scores.max() > 1 + 1e-6:
        raise PatternError(f"{tsv}: scores outside [0, 1] ({scores.min()}, {scores.max()})")
    scores = np.clip(scores, 0, 1)
    if n_layers is not None and scores.shape[0] != n_layers:
        raise PatternError(f"{tsv}: {scores.shape[0]} rows, the model has {n_layers} layers")
    if n_kv_heads is not None and scores.shape[1] != n_kv_heads:
        raise PatternError(f"{tsv}: {scores.shape[1]} columns, the model has {n_kv_heads} KV heads")
    return Pattern(scores, int(config["sink_size"]), int(config["recent_size"]), config, folder)


def write_pattern(
    folder: str | Path, scores: np.ndarray, sink_size: int, recent_size: int, workbench: dict | None = None
) -> Path:
    """Write a folder in the export's format (for tests and hand-made patterns)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scores = np.asarray(scores, dtype=float)
    lines = ["\t".join(f"{v:.9f}" for v in row) for row in scores]
    (folder / TSV).write_text("\n".join(lines) + "\n")
    cfg: dict[str, Any] = {"sink_size": int(sink_size), "recent_size": int(recent_size)}
    if workbench is not None:
        cfg["workbench"] = workbench
    (folder / CONFIG).write_text(json.dumps(cfg, indent=2))
    return folder
