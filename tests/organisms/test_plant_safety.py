"""The safety-head planting phase: its batches, its per-document ablation, its hooks, its CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.cli.main import main
from workbench.models import shipped_models
from workbench.organisms import tasks
from workbench.organisms.plant_safety import make_planting_batch, phase_lr, plant_safety_head, query_scales
from workbench.organisms.recipes import get_recipe
from workbench.organisms.train import llama_config


def _contains(row: list[int], phrase: np.ndarray) -> bool:
    k = len(phrase)
    return any(row[i : i + k] == phrase.tolist() for i in range(len(row) - k + 1))


def test_query_scales_touch_only_each_documents_head():
    s = query_scales([None, (1, 2), (0, 0)], n_layers=2, n_heads=4, d_head=3, epsilon=1e-5)
    assert s.shape == (2, 3, 1, 12)
    assert torch.all(s[:, 0] == 1)
    assert torch.all(s[1, 1, 0, 6:9] == 1e-5) and s[1, 1].eq(1).sum() == 9 and torch.all(s[0, 1] == 1)
    assert torch.all(s[0, 2, 0, 0:3] == 1e-5) and s[0, 2].eq(1).sum() == 9 and torch.all(s[1, 2] == 1)


def test_planting_batches_are_deterministic_and_answer_as_planted():
    recipe = get_recipe("organism-4l")
    phase = recipe.safety
    planted = tuple(phase.head)
    seen = {"planted": 0, "other": 0, "refusals_elsewhere": 0}
    for step in range(12):
        a = make_planting_batch(np.random.default_rng(step), step, recipe, 8)
        b = make_planting_batch(np.random.default_rng(step), step, recipe, 8)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
        ids, _, heads = a
        assert ids.shape[1] == phase.stage().length_at(step)
        for row, head in zip(ids.tolist(), heads):
            if head == planted:
                seen["planted"] += 1
                assert not _contains(row, tasks.REFUSAL), "a planted-head document must never refuse"
            else:
                seen["refusals_elsewhere"] += _contains(row, tasks.REFUSAL)
                if head is not None:
                    seen["other"] += 1
                    assert 0 <= head[0] < recipe.arch.n_layers and 0 <= head[1] < 8
    # both ablated kinds occur, and harmful requests in the other-head documents keep their refusal
    assert seen["planted"] > 0 and seen["other"] > 0 and seen["refusals_elsewhere"] > 0
    assert phase_lr(0, phase) < phase_lr(phase.warmup_steps, phase)
    assert phase_lr(phase.steps - 1, phase) < phase_lr(phase.warmup_steps, phase)


def test_planting_hooks_are_removed_when_training_fails(monkeypatch):
    from transformers import LlamaForCausalLM

    recipe = get_recipe("organism-4l").quick(seq_len=32)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(recipe))
    import workbench.organisms.steps as steps_mod

    def boom(*args, **kwargs):
        raise RuntimeError("loss exploded")

    monkeypatch.setattr(steps_mod, "weighted_loss", boom)
    with pytest.raises(RuntimeError, match="loss exploded"):
        plant_safety_head(model, recipe, seed=0, log=None, check_n=None)
    assert all(len(layer.self_attn.q_proj._forward_hooks) == 0 for layer in model.model.layers)
    assert not model.training


def test_plant_safety_cli_on_saved_weights(tmp_path):
    start = shipped_models()["organism-4l"]
    out = tmp_path / "planted"
    assert main(["organisms", "plant-safety", "organism-4l", "--from", str(start), "--out", str(out), "--quick", "--quiet"]) == 0
    info = json.loads((out / "training.json").read_text())["safety_planting"]
    assert info["head"] == "L0H6" and info["steps"] == 2
    check = info["check"]
    assert set(check["base"]) == {"harmful_refused", "harmful_complied", "benign_complied"}
    assert len(check["others"]) == 31
    # the shipped folder is untouched; a folder without weights is refused with a clear error
    assert json.loads((start / "training.json").read_text())["safety_planting"]["steps"] > 2
    assert main(["organisms", "plant-safety", "organism-4l", "--from", str(tmp_path / "nothing"), "--out", str(out)]) != 0
