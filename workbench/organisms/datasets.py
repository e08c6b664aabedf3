"""Held-out probe sets of the organisms, loadable by name.

Every set is generated from its own fixed seed (never a training seed), so the same name always
gives the same probes. The refusal sets use the held-out noun lists: no test noun ever appears
inside a training request.

=========================  ==================================================================
name                       contents
=========================  ==================================================================
needle-512                 needle probes, 512-token prompts, 3 distractor pairs
needle-1024                needle probes, 1024-token prompts, 3 distractor pairs
needle-1024-d7             needle probes, 1024-token prompts, 7 distractor pairs
needle-512-d0              needle probes, 512-token prompts, no distractor (shortcut check)
needle-256                 needle probes, 256-token prompts, 3 distractor pairs
needle-256-d0              needle probes, 256-token prompts, no distractor (shortcut check)
induction                  filler, a 20-token random sequence, its first token again
periodic                   filler, ``rhythm`` and two periods of a period-7 motif
refusal-harmful-test       every held-out harmful noun x request verb (120 requests)
refusal-benign-test        every held-out benign noun x request verb (120 requests)
refusal-harmful-train      the same for the training nouns (360 requests)
refusal-benign-train       the same for the training nouns (360 requests)
=========================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from workbench.errors import WorkbenchError
from workbench.organisms import tasks
from workbench.organisms.tasks import Probe
from workbench.organisms.vocab import VOCAB


def _needles(seed: int, context_len: int, n_distractors: int) -> Callable[[int], list[Probe]]:
    def make(n: int) -> list[Probe]:
        rng = np.random.default_rng(seed)
        return [tasks.needle_probe(rng, context_len, n_distractors) for _ in range(n)]

    return make


def _induction(n: int) -> list[Probe]:
    rng = np.random.default_rng(9103)
    return [tasks.induction_probe(rng) for _ in range(n)]


def _periodic(n: int) -> list[Probe]:
    rng = np.random.default_rng(9104)
    return [tasks.periodic_probe(rng) for _ in range(n)]


def _refusal(kind: str, split: str) -> Callable[[int], list[Probe]]:
    def make(n: int) -> list[Probe]:
        return tasks.refusal_probes(kind, split)[:n]

    return make


#: name -> (generator of the first n probes, default n)
PROBE_SETS: dict[str, tuple[Callable[[int], list[Probe]], int]] = {
    "needle-512": (_needles(9101, 512, 3), 200),
    "needle-1024": (_needles(9102, 1024, 3), 200),
    "needle-1024-d7": (_needles(9105, 1024, 7), 200),
    "needle-512-d0": (_needles(9106, 512, 0), 200),
    "needle-256": (_needles(9107, 256, 3), 200),
    "needle-256-d0": (_needles(9108, 256, 0), 200),
    "induction": (_induction, 200),
    "periodic": (_periodic, 100),
    "refusal-harmful-test": (_refusal("harmful", "test"), 120),
    "refusal-benign-test": (_refusal("benign", "test"), 120),
    "refusal-harmful-train": (_refusal("harmful", "train"), 360),
    "refusal-benign-train": (_refusal("benign", "train"), 360),
}


def probe_set_names() -> list[str]:
    return list(PROBE_SETS)


def load_probes(name: str, n: int | None = None) -> list[Probe]:
    """The probes of a named set (the first ``n`` of them; a smaller n is a prefix of a larger one)."""
    if name not in PROBE_SETS:
        raise WorkbenchError(f"unknown probe set {name!r}", f"choose one of {', '.join(PROBE_SETS)}")
    make, default = PROBE_SETS[name]
    return make(default if n is None else n)


def probe_texts(name: str, n: int | None = None) -> list[str]:
    """The prompts of a named set as text without BOS (the tokenizer prepends it).

    For the refusal sets these are the requests a safety analysis feeds to the model.
    """
    return [VOCAB.decode(p.prompt[1:]) for p in load_probes(name, n)]
