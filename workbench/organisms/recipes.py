"""Training recipes: one frozen config per organism (architecture, curriculum, optimiser, seed).

A recipe fully determines a training run: the same recipe and seed give the same weights on
the same machine and thread count. ``quick()`` returns a few-step version for tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from workbench.errors import WorkbenchError

DOC_TYPES = ("needle", "induction", "chat", "filler")


@dataclass(frozen=True)
class Architecture:
    """A Llama decoder with RoPE; ``n_kv_heads < n_heads`` gives grouped-query attention."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4
    d_ff: int = 512
    max_positions: int = 1024
    rope_theta: float = 10000.0

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass(frozen=True)
class Stage:
    """A curriculum stage: ``steps`` optimiser steps at sequence length ``seq_len``.

    ``mix`` gives the relative number of documents of each type per batch; ``needle_pairs`` the
    inclusive range of key/value pairs per needle document (pairs - 1 are distractors for any one
    query) and ``needle_queries`` the most recalls at its end.
    """

    steps: int
    seq_len: int
    mix: dict[str, int] = field(default_factory=lambda: {"needle": 3, "induction": 3, "chat": 2})
    needle_pairs: tuple[int, int] = (2, 6)
    needle_queries: int = 3


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    arch: Architecture = field(default_factory=Architecture)
    stages: tuple[Stage, ...] = ()
    seed: int = 0
    tokens_per_step: int = 4096
    lr: float = 2e-3
    warmup_steps: int = 200
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    value_len: int = 2
    answer_weight: float = 3.0
    eval_every: int = 250
    threads: int = 2

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> Stage:
        done = 0
        for stage in self.stages:
            done += stage.steps
            if step < done:
                return stage
        return self.stages[-1]

    def quick(self, steps: int = 6, seq_len: int = 64) -> Recipe:
        """A few-step version (tests, smoke runs): same architecture, tiny curriculum."""
        first = self.stages[0]
        pairs = (min(first.needle_pairs[0], 3), min(first.needle_pairs[1], 3))
        stage = Stage(steps=steps, seq_len=seq_len, mix=dict(first.mix), needle_pairs=pairs, needle_queries=2)
        return replace(self, stages=(stage,), tokens_per_step=4 * seq_len, warmup_steps=2, eval_every=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MAIN_STAGES = (
    Stage(steps=1500, seq_len=128, needle_pairs=(2, 6), needle_queries=3),
    Stage(steps=1500, seq_len=256, needle_pairs=(3, 8), needle_queries=4),
    Stage(steps=1500, seq_len=512, needle_pairs=(4, 10), needle_queries=4),
    Stage(steps=1500, seq_len=1024, needle_pairs=(4, 12), needle_queries=6),
)

RECIPES: dict[str, Recipe] = {
    "organism-4l": Recipe(
        name="organism-4l",
        description=(
            "4-layer Llama (d_model 128, 8 query heads, 4 KV heads, RoPE) trained on the full curriculum: "
            "needle retrieval with distractors up to 1024 tokens, induction, refusal, periodic text, grammar filler."
        ),
        stages=_MAIN_STAGES,
    ),
    "control-no-distractors": Recipe(
        name="control-no-distractors",
        description=(
            "Control for the needle shortcut: same model and curriculum at 128-256 tokens, but every needle "
            "document holds a single key/value pair, so the value can be copied without matching the key."
        ),
        stages=(
            Stage(steps=800, seq_len=128, needle_pairs=(1, 1), needle_queries=1),
            Stage(steps=400, seq_len=256, needle_pairs=(1, 1), needle_queries=1),
        ),
    ),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise WorkbenchError(f"unknown organism {name!r}", f"choose one of {', '.join(RECIPES)}")
    return RECIPES[name]
