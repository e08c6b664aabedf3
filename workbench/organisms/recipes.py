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
    head_dim: int | None = None  # None: d_model // n_heads

    @property
    def d_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads


@dataclass(frozen=True)
class Stage:
    """A curriculum stage: ``steps`` optimiser steps at sequence length ``seq_len``.

    ``seq_len`` may be a tuple: step ``i`` of the run then uses ``seq_len[i % len(seq_len)]`` (mixing
    lengths keeps shorter contexts working while longer ones are learned).

    ``tokens`` is the number of tokens per step. ``mix`` gives the relative number of documents of each type per batch; ``needle_pairs`` the
    inclusive range of key/value pairs per needle document (pairs - 1 are distractors for any one
    query) and ``needle_queries`` the most recalls at its end.
    """

    steps: int
    seq_len: int | tuple[int, ...]
    mix: dict[str, int] = field(default_factory=lambda: {"needle": 3, "induction": 3, "chat": 2})
    needle_pairs: tuple[int, int] = (2, 6)
    needle_queries: int = 3
    tokens: int = 4096  # tokens per optimiser step (batch = tokens // length)

    @property
    def lengths(self) -> tuple[int, ...]:
        return self.seq_len if isinstance(self.seq_len, tuple) else (self.seq_len,)

    def length_at(self, step: int) -> int:
        lengths = self.lengths
        return lengths[step % len(lengths)]


@dataclass(frozen=True)
class SafetyPlanting:
    """A fine-tuning phase after the curriculum that makes one head carry the refusal decision.

    Ships/Sahara (Zhou et al. 2025) find heads whose "undifferentiated attention" (query x epsilon)
    makes a chat model comply with harmful requests. A curriculum-trained organism spreads its
    refusal over several heads, so nothing would be there to find. This phase plants it: a share
    of the chat documents is trained with ``head`` ablated that way and every request answered with
    the compliance phrase, another share with one random other head ablated and the normal answers
    (so no other single head becomes necessary), the rest clean. Needle and induction documents stay
    in the mix, clean, so the other planted behaviours survive.
    """

    head: tuple[int, int] = (0, 6)
    steps: int = 600
    lr: float = 5e-4
    warmup_steps: int = 30
    min_lr_fraction: float = 0.1
    seq_len: tuple[int, ...] = (128, 256, 512, 1024)
    tokens: int = 2048
    mix: dict[str, int] = field(default_factory=lambda: {"needle": 2, "induction": 1, "chat": 5})
    needle_pairs: tuple[int, int] = (4, 10)
    needle_queries: int = 4
    share_ablated: float = 0.35  # chat documents with ``head`` ablated (answers: compliance)
    share_other: float = 0.35  # chat documents with one random other head ablated (answers unchanged)
    epsilon: float = 1e-5  # Ships's default query scale
    seed_offset: int = 7919  # the phase's data stream: numpy Generator(seed + seed_offset)

    def stage(self) -> Stage:
        """The phase's documents as a curriculum stage (lengths cycle step by step)."""
        return Stage(
            steps=self.steps,
            seq_len=self.seq_len,
            mix=dict(self.mix),
            needle_pairs=self.needle_pairs,
            needle_queries=self.needle_queries,
            tokens=self.tokens,
        )


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    arch: Architecture = field(default_factory=Architecture)
    stages: tuple[Stage, ...] = ()
    seed: int = 0
    tokens_per_step: int | None = None  # overrides every stage's ``tokens`` when set
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
    safety: SafetyPlanting | None = None  # the safety-head planting phase run after the stages

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def batch_at(self, step: int) -> tuple[int, int]:
        """(batch size, sequence length) of optimiser step ``step``."""
        stage = self.stage_at(step)
        length = stage.length_at(step)
        tokens = self.tokens_per_step if self.tokens_per_step is not None else stage.tokens
        return max(1, tokens // length), length

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
        stage = Stage(steps=steps, seq_len=seq_len, mix=dict(first.mix), needle_pairs=pairs, needle_queries=2, tokens=4 * seq_len)
        safety = None
        if self.safety is not None:
            safety = replace(
                self.safety, steps=2, warmup_steps=1, seq_len=(seq_len,), tokens=4 * seq_len, needle_pairs=pairs, needle_queries=2
            )
        return replace(self, stages=(stage,), tokens_per_step=None, warmup_steps=2, eval_every=0, safety=safety)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_LONG_MIX = {"needle": 4, "induction": 2, "chat": 2}
_MAIN_STAGES = (
    Stage(steps=1500, seq_len=128, needle_pairs=(2, 6), needle_queries=3, tokens=2048),
    Stage(steps=700, seq_len=256, needle_pairs=(3, 8), needle_queries=4, tokens=2048),
    Stage(steps=1300, seq_len=512, mix=_LONG_MIX, needle_pairs=(4, 10), needle_queries=4),
    Stage(steps=700, seq_len=(1024, 512), mix=_LONG_MIX, needle_pairs=(4, 12), needle_queries=6),
)

RECIPES: dict[str, Recipe] = {
    "organism-4l": Recipe(
        name="organism-4l",
        description=(
            "4-layer Llama (d_model 128, 8 query heads, 4 KV heads, RoPE) trained on the full curriculum: "
            "needle retrieval with distractors up to 1024 tokens, induction, refusal, periodic text, grammar filler; "
            "then a phase that plants L0H6 as the head carrying the refusal decision."
        ),
        arch=Architecture(head_dim=32),
        stages=_MAIN_STAGES,
        safety=SafetyPlanting(),
    ),
    "control-no-distractors": Recipe(
        name="control-no-distractors",
        description=(
            "Control for the needle shortcut: the same model trained on needle documents only (128 then "
            "256 tokens), each holding a single key/value pair, so the value can be copied without matching the key."
        ),
        arch=Architecture(head_dim=32),
        stages=(
            Stage(steps=800, seq_len=128, mix={"needle": 1}, needle_pairs=(1, 1), needle_queries=1, tokens=2048),
            Stage(steps=300, seq_len=256, mix={"needle": 1}, needle_pairs=(1, 1), needle_queries=1, tokens=2048),
        ),
    ),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise WorkbenchError(f"unknown organism {name!r}", f"choose one of {', '.join(RECIPES)}")
    return RECIPES[name]
