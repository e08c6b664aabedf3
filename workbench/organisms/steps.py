"""Training steps shared by the curriculum (`train`) and the safety-head planting phase (`plant_safety`):
documents, the learning-rate schedule, the optimizer and the weighted loss. A module of its own so
neither of those two imports the other."""

from __future__ import annotations

import math

import numpy as np
import torch

from workbench.organisms import tasks
from workbench.organisms.recipes import Recipe, Stage


def make_document(rng: np.random.Generator, kind: str, stage: Stage, recipe: Recipe, length: int | None = None) -> tasks.Sample:
    """One training document of type ``kind`` of ``length`` tokens (the stage's first length by default)."""
    L = stage.lengths[0] if length is None else length
    if kind == "needle":
        lo, hi = stage.needle_pairs
        n_pairs = int(rng.integers(lo, hi + 1))
        n_queries = int(rng.integers(1, min(stage.needle_queries, n_pairs) + 1))
        return tasks.needle_doc(rng, L, n_pairs, n_queries, recipe.value_len, recipe.answer_weight)
    if kind == "induction":
        return tasks.induction_doc(rng, L)
    if kind == "chat":
        return tasks.chat_doc(rng, L, recipe.answer_weight)
    if kind == "filler":
        return tasks.filler_doc(rng, L)
    raise ValueError(f"unknown document type {kind!r}")


def warmup_cosine(step: int, peak: float, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``floor`` x ``peak`` at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model, recipe: Recipe, lr: float) -> torch.optim.AdamW:
    """AdamW with the recipe's betas; weight decay on matrices only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        betas=recipe.betas,
    )


def weighted_loss(logits: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of predicting ids[:, 1:], weighted by weights[:, 1:] and normalised by their sum."""
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1), reduction="none"
    )
    w = weights[:, 1:].reshape(-1)
    return (ce * w).sum() / w.sum().clamp_min(1e-6)
