"""The needle shortcut check: does retrieval need key matching, and heads beyond layer 0?

A model trained on needles *without* distractors can answer by copying the only value-like
tokens in sight; it needs no key matching, and in trials here such a model did it with layer 0
alone. This check trains (or takes) the ``control-no-distractors`` organism and compares it with
the real organism on 256-token needle probes with and without 3 distractor pairs, plus the same
probes with each whole layer mean-ablated.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.organisms.evaluate import load_suite
from workbench.organisms.ground_truth import _Runner, reference_tokens

if TYPE_CHECKING:
    from workbench.models.model import Model

SHORTCUT_SUITE = {"needle-256": 100, "needle-256-d0": 100}


def layer_profile(model: Model, suite: dict[str, int] | None = None, backend: str = "hf") -> dict[str, Any]:
    """Needle accuracy with no ablation and with each whole layer mean-ablated (as in the ground truth)."""
    probe_sets = load_suite(suite or SHORTCUT_SUITE)
    runner = _Runner(model, backend)
    runner.compute_means(reference_tokens())
    layers = {f"L{layer}": runner.score(probe_sets, f"L{layer}", "mean") for layer in range(model.geometry.n_layers)}
    return {"sets": list(probe_sets), "baseline": runner.score(probe_sets), "layers": layers, "mode": "mean"}


def shortcut_check(
    name: str, control: str | Path | None = None, device: str = "cpu", log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Layer profiles of organism ``name`` and of the no-distractor control (trained if not given)."""
    from workbench.models import load_model
    from workbench.organisms.recipes import get_recipe
    from workbench.organisms.train import train

    say = log or (lambda _m: None)
    with tempfile.TemporaryDirectory() as tmp:
        control_info: dict[str, Any] = {}
        if control is None:
            say("training control-no-distractors ...")
            result = train(get_recipe("control-no-distractors"), Path(tmp) / "control", log=None)
            control = result.folder
            control_info = {"trained_steps": result.steps, "wall_time_s": round(result.wall_time_s, 1)}
        models = {}
        for label, spec in ((name, name), ("control-no-distractors", str(control))):
            model = load_model(spec, device=device, dtype="float32")
            models[label] = layer_profile(model)
            say(f"{label}: {models[label]}")
    return {
        "description": (
            "Needle probes of 256 tokens with 3 distractor pairs (needle-256) and with a single pair "
            "(needle-256-d0), for the organism and for a control trained on single-pair needle documents only "
            "(recipe control-no-distractors). Rows: whole layers mean-ablated (as in the ground-truth table)."
        ),
        "command": f"workbench organisms shortcut-check {name}",
        "control": control_info,
        "models": models,
        "summary": summarize(models),
    }


def summarize(models: dict[str, Any], drop: float = 0.5) -> list[str]:
    """One line per model: accuracies, and the layers whose ablation costs at least ``drop``."""
    lines = []
    for label, res in models.items():
        base = res["baseline"]
        parts = [f"{k} {v:.2f}" for k, v in base.items()]
        needed = {k: [layer for layer, v in res["layers"].items() if base[k] - v[k] >= drop] for k in base}
        need_text = "; ".join(f"{k} needs {', '.join(v) if v else 'no single layer'}" for k, v in needed.items())
        lines.append(f"{label}: {', '.join(parts)}; {need_text} (accuracy drop >= {drop})")
    return lines
