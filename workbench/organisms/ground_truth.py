"""The ground-truth head table: held-out accuracy per task with each single head ablated.

For every query head (and, as a coarser check, every whole layer) the head is ablated with
`workbench.interventions.ablation.ablate_heads` and the held-out probe sets are scored again.
A head whose ablation drops a task's accuracy is causally needed for it; the analyses (retrieval
scores, safety-head search, ...) can be checked against this table.

Default: mean ablation (each head's ``hook_z`` replaced by its mean over a fixed reference batch
of 32 training-mixture documents of 256 tokens, seed 4321) and uniform ablation (query x 1e-5,
the Ships "undifferentiated attention"); whole layers are ablated in mean mode only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.interventions.ablation import (
    ABLATION_MODES,
    AblationMode,
    HeadMeans,
    ablate_heads,
    ablate_heads_hf,
    head_means,
    head_means_hf,
)
from workbench.organisms.evaluate import bridge_logits_fn, evaluate_probes, headline, hf_logits_fn, load_suite
from workbench.organisms.recipes import Stage, get_recipe

if TYPE_CHECKING:
    from workbench.models.model import Model

#: probe set -> number of probes used for the table
GROUND_TRUTH_SUITE: dict[str, int] = {
    "needle-512": 100,
    "needle-1024": 30,
    "induction": 100,
    "periodic": 50,
    "refusal-harmful-test": 120,
    "refusal-benign-test": 120,
}


@dataclass(frozen=True)
class GroundTruthConfig:
    suite: dict[str, int] = field(default_factory=lambda: dict(GROUND_TRUTH_SUITE))
    modes: tuple[str, ...] = ("mean", "uniform")
    reference_docs: int = 32
    reference_len: int = 256
    reference_seed: int = 4321
    layer_modes: tuple[str, ...] = ("mean",)  # modes in which whole layers are also ablated
    #: "hf": the same ablations through torch hooks on the Hugging Face model with SDPA attention
    #: (`ablate_heads_hf`, ~4x faster on CPU); "bridge": `ablate_heads` on the TransformerBridge.
    backend: str = "hf"


def reference_tokens(n_docs: int = 32, length: int = 256, seed: int = 4321) -> torch.Tensor:
    """A fixed batch of training-mixture documents (needle, induction, chat) for mean ablation."""
    from workbench.organisms.steps import make_document

    recipe = get_recipe("organism-4l")
    stage = Stage(steps=1, seq_len=length, needle_pairs=(3, 8), needle_queries=3)
    rng = np.random.default_rng(seed)
    kinds = ["needle", "induction", "chat", "chat"]
    docs = [make_document(rng, kinds[i % len(kinds)], stage, recipe).ids for i in range(n_docs)]
    return torch.from_numpy(np.stack(docs))


def _is_mode(mode: str) -> TypeGuard[AblationMode]:
    return mode in ABLATION_MODES


def _ablation_mode(mode: str) -> AblationMode:
    """``mode`` (a configured name) as an ablation mode; the ablation's own error for an unknown one."""
    if not _is_mode(mode):
        raise WorkbenchError(f"unknown ablation mode {mode!r}", f"use one of {', '.join(ABLATION_MODES)}")
    return mode


class _Runner:
    """Scores probe sets with heads ablated, on the bridge or on an SDPA copy of the HF model."""

    def __init__(self, model: Model, backend: str) -> None:
        if backend not in ("hf", "bridge"):
            raise ValueError(f"unknown ground-truth backend {backend!r}: use hf or bridge")
        self.model = model
        self.backend = backend
        self.hf = None
        if backend == "hf":
            from transformers import AutoModelForCausalLM

            self.hf = (
                AutoModelForCausalLM.from_pretrained(str(model.source.path), attn_implementation="sdpa", dtype=model.dtype)
                # transformers declares PreTrainedModel.to with functools.wraps, which mypy does not bind to self
                .to(model.device)  # type: ignore[arg-type]
                .eval()
            )
        self.means: HeadMeans | None = None

    def compute_means(self, reference: torch.Tensor) -> None:
        self.means = head_means_hf(self.hf, reference) if self.hf is not None else head_means(self.model, reference)

    def score(self, probe_sets, heads: str | None = None, mode: AblationMode = "mean") -> dict[str, float]:
        if self.hf is not None:
            ctx = ablate_heads_hf(self.hf, heads or [], mode, means=self.means)
            fn = hf_logits_fn(self.hf)
        else:
            ctx = ablate_heads(self.model, heads or [], mode, means=self.means)
            fn = bridge_logits_fn(self.model)
        with torch.no_grad(), ctx:
            return headline(evaluate_probes(fn, probe_sets, device=self.model.device))


def ground_truth_table(
    model: Model,
    config: GroundTruthConfig | None = None,
    heads: Sequence[Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Baseline and per-head (and per-layer) ablated metrics for each mode.

    ``heads`` restricts the sweep (every query head by default). The result is JSON-ready:
    ``{"baseline": {set: value}, "modes": {mode: {"heads": {"L0H0": {set: value}}, "layers": {...}}}}``;
    values are refusal rates for ``refusal-*`` sets and accuracies otherwise.
    """
    cfg = config or GroundTruthConfig()
    say = progress or (lambda _m: None)
    geo = model.geometry
    probe_sets = load_suite(cfg.suite)
    t0 = time.time()
    runner = _Runner(model, cfg.backend)
    baseline = runner.score(probe_sets)
    say(f"baseline: {baseline}")
    if "mean" in cfg.modes:
        runner.compute_means(reference_tokens(cfg.reference_docs, cfg.reference_len, cfg.reference_seed))
    head_list = [f"L{h.layer}H{h.head}" for h in geo.all_heads()] if heads is None else [str(h) for h in heads]
    modes: dict[str, Any] = {}
    for configured in cfg.modes:
        mode = _ablation_mode(configured)
        per_head: dict[str, dict[str, float]] = {}
        for name in head_list:
            per_head[name] = runner.score(probe_sets, name, mode)
            say(f"{mode} {name}: {per_head[name]}")
        per_layer: dict[str, dict[str, float]] = {}
        if mode in cfg.layer_modes and heads is None:
            for layer in range(geo.n_layers):
                per_layer[f"L{layer}"] = runner.score(probe_sets, f"L{layer}", mode)
                say(f"{mode} L{layer} (all heads): {per_layer[f'L{layer}']}")
        modes[mode] = {"heads": per_head, "layers": per_layer}
    return {
        "model": model.name,
        "config": asdict(cfg),
        "metric": "refusal rate for refusal-* sets, accuracy otherwise (see workbench.organisms.evaluate)",
        "baseline": baseline,
        "modes": modes,
        "seconds": round(time.time() - t0, 1),
    }


def important_heads(table: dict[str, Any], mode: str = "mean", min_drop: float = 0.2) -> dict[str, list[tuple[str, float]]]:
    """Per task, the heads whose ablation moves the metric by at least ``min_drop``, largest first.

    For ``refusal-benign-*`` the harmful direction is an *increase* of the refusal rate; for every
    other set it is a decrease.
    """
    out: dict[str, list[tuple[str, float]]] = {}
    base = table["baseline"]
    for task, b in base.items():
        sign = -1.0 if task.startswith("refusal-benign") else 1.0
        hits = []
        for head, scores in table["modes"][mode]["heads"].items():
            drop = sign * (b - scores[task])
            if drop >= min_drop:
                hits.append((head, round(drop, 4)))
        out[task] = sorted(hits, key=lambda x: -x[1])
    return out


def write_ground_truth(table: dict[str, Any], folder: str | Path) -> Path:
    path = Path(folder) / "ground_truth.json"
    path.write_text(json.dumps(table, indent=1) + "\n")
    return path
