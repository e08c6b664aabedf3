"""The organisms as a client of the library: register the shipped models and their probe sets.

Called once per process through the ``workbench.plugins`` entry point (see `workbench.plugins`).
The sets apply only to the shipped organisms (trained on the organism vocabulary), so any other
model keeps the library's defaults; the families ask the registry by kind and never test for an
organism themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.errors import InputDataError

if TYPE_CHECKING:
    from workbench.models.model import Model

SHIPPED = Path(__file__).resolve().parent / "shipped"
#: what the organisms' requests are answered with: a few words, so few tokens and a short judge minimum
REQUEST_HINTS = {"max_new_tokens": 8, "min_chars": 8}


def organism_names() -> list[str]:
    return [p.name for p in sorted(SHIPPED.iterdir()) if (p / "config.json").is_file()] if SHIPPED.is_dir() else []


def is_organism(model: Model) -> bool:
    """A shipped organism loaded by its name (its tokenizer reads the organism vocabulary)."""
    return getattr(model.source, "kind", None) == "shipped" and model.name in organism_names()


def _filler(model: Model, rng: np.random.Generator, n: int, length: int) -> list[torch.Tensor]:
    """Filler documents of the organism grammar (BOS first), ``length`` tokens each."""
    from workbench.organisms.tasks import filler_doc

    out = []
    for _ in range(n):
        ids = np.asarray(filler_doc(rng, length).ids, dtype=np.int64)[:length]
        if ids.size and int(ids.max()) >= model.geometry.vocab_size:
            raise InputDataError(f"organism filler ids exceed the vocabulary of {model.name}")
        out.append(torch.from_numpy(ids).view(1, -1))
    return out


def _needles(model: Model, rng: np.random.Generator, n: int, length: int) -> list[Any]:
    """Key/value needle probes with 3 distractor pairs, ``length``-token prompts."""
    from workbench.data.needles import from_organism_probes
    from workbench.organisms import tasks

    return from_organism_probes(tasks.needle_probe(rng, length, 3) for _ in range(n))


def _periodic(model: Model, rng: np.random.Generator, n: int, length: int) -> list[torch.Tensor]:
    """BOS + ``rhythm`` + a motif of the planted period, ``length`` tokens."""
    from workbench.organisms import tasks

    bos = model.geometry.bos.token_id
    out = []
    for _ in range(n):
        ids, _ = tasks.periodic_block(rng, length - 1)
        out.append(torch.from_numpy(np.concatenate([[bos], ids]).astype(np.int64)).view(1, -1))
    return out


def _requests(name: str, kind: str) -> Any:
    def load() -> Any:
        from workbench.data.registry import Dataset
        from workbench.organisms.datasets import load_probes

        items = tuple(tuple(int(i) for i in p.prompt) for p in load_probes(name))
        return Dataset(name, kind, items, "organism-refusal-test", hints=REQUEST_HINTS, tokenized=True)

    return load


def register() -> None:
    from workbench.data.registry import GeneratedSet, register_dataset
    from workbench.models.registry import register_model
    from workbench.organisms import vocab

    for name in organism_names():
        register_model(name, SHIPPED / name)
    register_dataset(
        "organism-filler",
        "text",
        lambda: GeneratedSet("organism-filler", "text", "organism-filler", _filler),
        applies_to=is_organism,
    )
    register_dataset(
        "organism-needles",
        "needles",
        lambda: GeneratedSet("organism-needles", "needles", "organism-needles", _needles),
        applies_to=is_organism,
    )
    register_dataset(
        "organism-periodic",
        "periodic",
        lambda: GeneratedSet(
            "organism-periodic", "periodic", "organism-periodic", _periodic, hints={"period": int(vocab.RHYTHM_PERIOD)}
        ),
        applies_to=is_organism,
    )
    register_dataset("refusal-harmful-test", "harmful", _requests("refusal-harmful-test", "harmful"), applies_to=is_organism)
    register_dataset("refusal-benign-test", "harmless", _requests("refusal-benign-test", "harmless"), applies_to=is_organism)
