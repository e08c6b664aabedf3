"""The run context every family receives: seed, sizes, device, prompts, progress.

A family must get everything that changes its numbers from here (or from its own config),
never from global state, so that a resumed run computes exactly what an uninterrupted one
would have computed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: ``progress(label, done, total)``: called by families on long steps (per prompt, per head ...).
ProgressFn = Callable[[str, int, int], None]


@dataclass
class RunContext:
    """Options shared by all families of one run.

    ``max_tokens`` caps the length of every prompt a family builds or reads. ``context`` is the
    length asked for with ``--context N`` (``None``: not asked). The options layer
    (`workbench.atlas.options.resolve_options`) has already turned it into ``max_tokens = N`` and into
    the families' own length options (`workbench.atlas.options.CONTEXT_OPTIONS`, e.g.
    ``retrieval.context``), so a family gets the asked length from those; the field is here for a
    family whose own length is not among them yet. ``n_prompts`` is
    how many prompts (or probes) a family uses (``None``: the family's default, or every prompt
    of the prompt file). ``prompts`` is the user's prompt
    file as a list of texts (``None``: each family uses its own dataset). ``family_options``
    holds the per-family config overrides (``{"sinks": {"eps": 0.2}}``), already validated.
    """

    seed: int = 0
    max_tokens: int = 256
    context: int | None = None
    n_prompts: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    prompts: list[str] | None = None
    prompt_file: Path | None = None
    family_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: ProgressFn | None = None
    quiet: bool = False

    def rng(self, *salt: str) -> np.random.Generator:
        """A generator seeded by the run seed and the salt (family name, part): independent of run order."""
        words = [self.seed & 0xFFFFFFFF, *(zlib.crc32(s.encode()) for s in salt)]
        return np.random.default_rng(words)

    def seed_torch(self, *salt: str) -> None:
        """Seed torch's global generator the same way before a part runs."""
        torch.manual_seed(int(self.rng(*salt, "torch").integers(0, 2**31 - 1)))

    def report(self, label: str, done: int, total: int) -> None:
        if self.progress is not None and not self.quiet:
            self.progress(label, done, total)

    def options_for(self, family: str) -> dict[str, Any]:
        return dict(self.family_options.get(family, {}))
