"""Train an organism from its recipe and write it as a Hugging Face folder.

Training uses `transformers.LlamaForCausalLM` directly (fast on CPU); the result is saved with
``save_pretrained`` (safetensors) plus the word-level tokenizer, so it loads through
`workbench.models.load_model` like any Hugging Face checkpoint. Everything random comes from the
recipe's seed (``torch.manual_seed`` for the initialisation, a numpy ``Generator`` for the data),
so a run is reproducible on the same machine and thread count.

Besides the weights the folder gets ``recipe.json`` (the exact recipe), ``training_log.jsonl``
(loss and held-out metrics every ``eval_every`` steps) and ``training.json`` (wall time, steps,
final metrics).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workbench.organisms import tasks
from workbench.organisms.evaluate import TRAINING_SUITE, evaluate_probes, headline, hf_logits_fn, load_suite
from workbench.organisms.recipes import Recipe
from workbench.organisms.steps import make_document, make_optimizer, warmup_cosine, weighted_loss
from workbench.organisms.vocab import BOS_ID, EOS_ID, PAD_ID, VOCAB

Log = Callable[[str], None]


def llama_config(recipe: Recipe):
    """The Hugging Face config of an organism."""
    from transformers import LlamaConfig

    a = recipe.arch
    return LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=a.d_model,
        intermediate_size=a.d_ff,
        num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads,
        num_key_value_heads=a.n_kv_heads,
        head_dim=a.d_head,
        max_position_embeddings=a.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta},
        rms_norm_eps=1e-5,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )


def organism_tokenizer():
    """The word-level tokenizer of the organism vocabulary (BOS prepended)."""
    from workbench.models.word_tokenizer import build_word_tokenizer

    return build_word_tokenizer(VOCAB.words)


def make_batch(rng: np.random.Generator, step: int, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids [B, L] and loss weights [B, L] for one step; document types follow the stage's mix in a fixed cycle."""
    stage = recipe.stage_at(step)
    cycle = [k for k, n in stage.mix.items() for _ in range(n)]
    batch, length = recipe.batch_at(step)
    docs = [make_document(rng, cycle[(step * batch + i) % len(cycle)], stage, recipe, length) for i in range(batch)]
    ids = torch.from_numpy(np.stack([d.ids for d in docs]))
    w = torch.from_numpy(np.stack([d.weights for d in docs]))
    return ids, w


def lr_at(step: int, recipe: Recipe) -> float:
    """The curriculum's learning rate at ``step``."""
    return warmup_cosine(step, recipe.lr, recipe.warmup_steps, recipe.total_steps, recipe.min_lr_fraction)


@dataclass
class TrainResult:
    folder: Path
    steps: int
    wall_time_s: float
    final_metrics: dict[str, float]


def train(
    recipe: Recipe,
    out_dir: str | Path,
    seed: int | None = None,
    log: Log | None = print,
    evaluate_at_end: bool = True,
) -> TrainResult:
    """Train ``recipe`` (with ``seed`` overriding the recipe's) and write the model to ``out_dir``."""
    from transformers import LlamaForCausalLM

    seed = recipe.seed if seed is None else seed
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        config = llama_config(recipe)
        config._attn_implementation = "sdpa"
        model = LlamaForCausalLM(config)
        opt = make_optimizer(model, recipe, recipe.lr)
        suite = load_suite(TRAINING_SUITE) if recipe.eval_every else {}
        log_path = out / "training_log.jsonl"
        log_file = log_path.open("w")
        n_params = sum(p.numel() for p in model.parameters())
        say(f"training {recipe.name}: {recipe.total_steps} steps, {n_params / 1e6:.2f}M parameters, seed {seed}")
        t0 = time.time()
        c0 = time.process_time()
        running = None
        loads: list[float] = []
        for step in range(recipe.total_steps):
            lr = lr_at(step, recipe)
            for g in opt.param_groups:
                g["lr"] = lr
            ids, w = make_batch(rng, step, recipe)
            model.train()
            logits = model(input_ids=ids).logits
            loss = weighted_loss(logits, ids, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            value = loss.item()
            running = value if running is None else 0.98 * running + 0.02 * value
            last = step + 1 == recipe.total_steps
            if (step + 1) % 50 == 0 and not (recipe.eval_every and (step + 1) % recipe.eval_every == 0):
                say(f"step {step + 1} loss {running:.4f} ({(time.time() - t0) / (step + 1):.2f} s/step)")
            if recipe.eval_every and ((step + 1) % recipe.eval_every == 0 or last):
                model.eval()
                if hasattr(os, "getloadavg"):
                    loads.append(os.getloadavg()[0])
                metrics = headline(evaluate_probes(hf_logits_fn(model), suite))
                entry = {
                    "step": step + 1,
                    "seq_len": recipe.batch_at(step)[1],
                    "loss": round(running, 4),
                    "lr": lr,
                    "elapsed_s": round(time.time() - t0, 1),
                    **{k: round(v, 4) for k, v in metrics.items()},
                }
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
                say(" ".join(f"{k}={v}" for k, v in entry.items()))
        wall = time.time() - t0
        cpu = time.process_time() - c0
        log_file.close()
        model.eval()
        planting = None
        if recipe.safety is not None:
            from workbench.organisms.plant_safety import plant_safety_head

            planting = plant_safety_head(
                model, recipe, seed, log=log, check_n=120 if evaluate_at_end and recipe.eval_every else None
            )
        final: dict[str, float] = {}
        if evaluate_at_end and recipe.eval_every:
            final = headline(evaluate_probes(hf_logits_fn(model), suite))
        save_organism(model, recipe, out, seed)
        info = {
            "name": recipe.name,
            "seed": seed,
            "steps": recipe.total_steps,
            "wall_time_s": round(wall, 1),
            "cpu_time_s": round(cpu, 1),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_1min_mean": round(float(np.mean(loads)), 2) if loads else None,
            "parameters": n_params,
            "torch": torch.__version__,
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "final_training_suite": final,
        }
        if planting is not None:
            info["safety_planting"] = planting
        (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        say(f"done in {wall:.0f} s; saved to {out}")
        return TrainResult(out, recipe.total_steps, wall, final)
    finally:
        torch.set_num_threads(previous_threads)


def save_organism(model, recipe: Recipe, out: Path, seed: int) -> None:
    """Weights (safetensors), config, tokenizer and the recipe, in one Hugging Face folder."""
    model.config.architectures = ["LlamaForCausalLM"]
    model.save_pretrained(str(out), safe_serialization=True)
    organism_tokenizer().save_pretrained(str(out))
    payload = {"seed": seed, **recipe.to_dict()}
    (out / "recipe.json").write_text(json.dumps(payload, indent=2) + "\n")


def verify_export(folder: str | Path, n_tokens: int = 64) -> float:
    """Load ``folder`` through `load_model` and return max |bridge logits - HF logits| on filler text."""
    from transformers import LlamaForCausalLM

    from workbench.models import load_model

    m = load_model(str(folder), device="cpu", dtype="float32")
    text = VOCAB.decode(tasks.filler_tokens(np.random.default_rng(0), n_tokens))
    ids = m.to_tokens(text)
    if int(ids[0, 0]) != BOS_ID:
        raise AssertionError("the organism tokenizer did not prepend BOS")
    hf = LlamaForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        a = m.logits(ids)
        b = hf(input_ids=ids).logits
    return float((a - b).abs().max())
