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
from typing import Any

from workbench.interventions.ablation import ablate_heads, head_means
from workbench.organisms.evaluate import bridge_logits_fn, evaluate_probes, headline, load_suite
from workbench.organisms.ground_truth import reference_tokens

SHORTCUT_SUITE = {"needle-256": 100, "needle-256-d0": 100}


def layer_profile(model, suite: dict[str, int] | None = None) -> dict[str, Any]:
    """Needle accuracy with no ablation and with each whole layer mean-ablated."""
    probe_sets = load_suite(suite or SHORTCUT_SUITE)
    means = head_means(model, reference_tokens())

    def score() -> dict[str, float]:
        return headline(evaluate_probes(bridge_logits_fn(model), probe_sets, device=model.device))

    layers = {}
    for layer in range(model.geometry.n_layers):
        with ablate_heads(model, f"L{layer}", "mean", means=means):
            layers[f"L{layer}"] = score()
    return {"sets": list(probe_sets), "baseline": score(), "layers": layers, "mode": "mean"}


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
            "Needle probes of 256 tokens with 3 distractor pairs (needle-256) and without (needle-256-d0). "
            "The control is trained on single-pair needles only (recipe control-no-distractors, "
            "documents of 128-256 tokens); it solves the single-pair probes but is near chance (1/4) with "
            "distractors when it never learned to match keys. The table also shows which layers each model "
            "needs for the needle: whole layers mean-ablated."
        ),
        "command": f"workbench organisms shortcut-check {name}",
        "control": control_info,
        "models": models,
    }
