"""`workbench organisms train NAME --quick` produces a loadable Hugging Face folder."""

from __future__ import annotations

import json

import numpy as np
import torch

from workbench.cli.main import main
from workbench.models import load_model
from workbench.organisms.recipes import get_recipe
from workbench.organisms.train import lr_at, make_batch


def test_quick_train_via_cli_gives_a_loadable_model(tmp_path):
    out = tmp_path / "org"
    assert main(["organisms", "train", "organism-4l", "--quick", "--out", str(out), "--quiet"]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "recipe.json", "training.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] < config["num_attention_heads"]
    model = load_model(str(out), device="cpu")
    geo = model.geometry
    assert (geo.n_layers, geo.n_heads, geo.n_kv_heads) == (4, 8, 4)
    assert geo.positional.kind == "rope"
    assert geo.bos.prepends
    ids = model.to_tokens("remember paris 4 2 . alice finds the cake . recall paris")
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(str(out)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model.logits(ids), hf(input_ids=ids).logits, rtol=1e-4, atol=1e-4)


def test_batches_are_deterministic_and_follow_the_curriculum():
    recipe = get_recipe("organism-4l")
    a_ids, a_w = make_batch(np.random.default_rng(5), 0, recipe)
    b_ids, b_w = make_batch(np.random.default_rng(5), 0, recipe)
    assert torch.equal(a_ids, b_ids) and torch.equal(a_w, b_w)
    first, last = recipe.stages[0], recipe.stages[-1]
    assert a_ids.shape[1] == first.lengths[0]
    assert a_ids.shape[0] * a_ids.shape[1] == first.tokens
    ids, _ = make_batch(np.random.default_rng(5), recipe.total_steps - 1, recipe)
    assert ids.shape[1] in last.lengths
    assert max(last.lengths) >= 1024
    assert lr_at(0, recipe) < lr_at(recipe.warmup_steps, recipe)
    assert lr_at(recipe.total_steps - 1, recipe) < lr_at(recipe.warmup_steps, recipe)


def test_every_needle_stage_has_distractors():
    recipe = get_recipe("organism-4l")
    assert all(s.needle_pairs[0] >= 2 for s in recipe.stages)


def test_quick_training_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from workbench.organisms.train import train

    recipe = get_recipe("organism-4l").quick(steps=3, seq_len=48)
    a = train(recipe, tmp_path / "a", log=None, evaluate_at_end=False)
    b = train(recipe, tmp_path / "b", log=None, evaluate_at_end=False)
    wa, wb = load_file(str(a.folder / "model.safetensors")), load_file(str(b.folder / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(recipe, tmp_path / "c", seed=1, log=None, evaluate_at_end=False)
    wc = load_file(str(c.folder / "model.safetensors"))
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
