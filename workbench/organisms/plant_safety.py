"""The safety-head planting phase: fine-tune a trained organism so that one head carries refusal.

See `workbench.organisms.recipes.SafetyPlanting` for why. The ablation used while training is the
one Ships uses to attribute (the head's query scaled by epsilon at the output of ``q_proj``, before
RoPE), applied per document through a scale tensor so one batch mixes clean, planted-head-ablated
and other-head-ablated documents. The phase starts a fresh optimiser and a fresh data stream
(``seed + seed_offset``), so running it on saved curriculum weights gives the same result as
running it at the end of `workbench.organisms.train.train`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from workbench.organisms import tasks
from workbench.organisms.evaluate import evaluate_probes, hf_logits_fn, load_suite
from workbench.organisms.recipes import Recipe, SafetyPlanting

Log = Callable[[str], None]
HeadPair = tuple[int, int]


def phase_lr(step: int, phase: SafetyPlanting) -> float:
    """The phase's learning rate: the curriculum's warm-up and cosine shape with its own peak and length."""
    from workbench.organisms.steps import warmup_cosine

    return warmup_cosine(step, phase.lr, phase.warmup_steps, phase.steps, phase.min_lr_fraction)


def make_planting_batch(
    rng: np.random.Generator, step: int, recipe: Recipe, n_heads: int
) -> tuple[torch.Tensor, torch.Tensor, list[HeadPair | None]]:
    """Ids [B, L], loss weights [B, L] and the head ablated in each document (None: clean)."""
    from workbench.organisms.steps import make_document

    phase = recipe.safety
    assert phase is not None
    stage = phase.stage()
    length = stage.length_at(step)
    batch = max(1, stage.tokens // length)
    cycle = [k for k, n in stage.mix.items() for _ in range(n)]
    n_layers = recipe.arch.n_layers
    others = [(layer, h) for layer in range(n_layers) for h in range(n_heads) if (layer, h) != tuple(phase.head)]
    docs, ablated = [], []
    for i in range(batch):
        kind = cycle[(step * batch + i) % len(cycle)]
        head: HeadPair | None = None
        if kind == "chat":
            u = rng.random()
            if u < phase.share_ablated:
                head = tuple(phase.head)  # type: ignore[assignment]
                docs.append(tasks.chat_doc(rng, length, recipe.answer_weight, comply_all=True))
            else:
                if u < phase.share_ablated + phase.share_other:
                    head = others[int(rng.integers(len(others)))]
                docs.append(tasks.chat_doc(rng, length, recipe.answer_weight))
        else:
            docs.append(make_document(rng, kind, stage, recipe, length))
        ablated.append(head)
    ids = torch.from_numpy(np.stack([d.ids for d in docs]))
    w = torch.from_numpy(np.stack([d.weights for d in docs]))
    return ids, w, ablated


def query_scales(ablated: list[HeadPair | None], n_layers: int, n_heads: int, d_head: int, epsilon: float) -> torch.Tensor:
    """[n_layers, B, 1, n_heads * d_head]: 1, except epsilon on each document's ablated head."""
    scales = torch.ones(n_layers, len(ablated), 1, n_heads * d_head)
    for row, head in enumerate(ablated):
        if head is not None:
            layer, h = head
            scales[layer, row, 0, h * d_head : (h + 1) * d_head] = epsilon
    return scales


class _PerDocumentQueryScale:
    """Forward hooks on every ``q_proj`` that multiply its output by the current batch's scales."""

    def __init__(self, model) -> None:
        self.scales: torch.Tensor | None = None
        self.handles = [layer.self_attn.q_proj.register_forward_hook(self._hook(i)) for i, layer in enumerate(model.model.layers)]

    def _hook(self, layer: int):
        def scale(mod, args, out):
            return out if self.scales is None else out * self.scales[layer].to(out.dtype)

        return scale

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def plant_safety_head(model, recipe: Recipe, seed: int, log: Log | None = print, check_n: int | None = 120) -> dict:
    """Run the recipe's planting phase on ``model`` (a `LlamaForCausalLM`, trained in place); with
    ``check_n``, `planting_check` on that many held-out requests per set goes into the result."""
    from workbench.interventions.ablation import hf_geometry
    from workbench.organisms.steps import make_optimizer, weighted_loss

    phase = recipe.safety
    if phase is None:
        raise ValueError(f"recipe {recipe.name!r} has no safety-head planting phase")
    say = log or (lambda _msg: None)
    n_layers, n_heads, d_head = hf_geometry(model)
    rng = np.random.default_rng(seed + phase.seed_offset)
    opt = make_optimizer(model, recipe, phase.lr)
    say(f"planting L{phase.head[0]}H{phase.head[1]} as the safety head: {phase.steps} steps")
    hooks = _PerDocumentQueryScale(model)
    t0, c0 = time.time(), time.process_time()
    running = None
    try:
        model.train()
        for step in range(phase.steps):
            for g in opt.param_groups:
                g["lr"] = phase_lr(step, phase)
            ids, w, ablated = make_planting_batch(rng, step, recipe, n_heads)
            hooks.scales = query_scales(ablated, n_layers, n_heads, d_head, phase.epsilon)
            loss = weighted_loss(model(input_ids=ids).logits, ids, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            if (step + 1) % 50 == 0:
                say(f"planting step {step + 1} loss {running:.4f} ({(time.time() - t0) / (step + 1):.2f} s/step)")
    finally:
        hooks.remove()
        model.eval()
    info: dict = {
        "head": f"L{phase.head[0]}H{phase.head[1]}",
        "steps": phase.steps,
        "wall_time_s": round(time.time() - t0, 1),
        "cpu_time_s": round(time.process_time() - c0, 1),
        "final_loss": round(float(running), 4) if running is not None else None,
    }
    if check_n:
        info["check"] = planting_check(model, phase.head, phase.epsilon, n=check_n)
    return info


@torch.no_grad()
def planting_check(model, head: HeadPair, epsilon: float = 1e-5, n: int = 120) -> dict:
    """Teacher-forced refusal/compliance rates on the held-out requests: clean, with the planted head
    ablated, and with each other head ablated (the planted head should be the only one that flips)."""
    from workbench.interventions.ablation import ablate_heads_hf, hf_geometry

    suite = load_suite({"refusal-harmful-test": n, "refusal-benign-test": n})
    n_layers, n_heads, _ = hf_geometry(model)

    def rates(heads: list[HeadPair]) -> dict[str, float]:
        with ablate_heads_hf(model, [f"L{l}H{h}" for l, h in heads], "uniform", epsilon=epsilon):
            m = evaluate_probes(hf_logits_fn(model), suite)
        return {
            "harmful_refused": m["refusal-harmful-test"]["refusal_rate"],
            "harmful_complied": m["refusal-harmful-test"]["compliance_rate"],
            "benign_complied": m["refusal-benign-test"]["compliance_rate"],
        }

    others = {f"L{l}H{h}": rates([(l, h)]) for l in range(n_layers) for h in range(n_heads) if (l, h) != tuple(head)}
    return {
        "base": rates([]),
        "planted": rates([tuple(head)]),  # type: ignore[list-item]
        "others_max_harmful_complied": max(v["harmful_complied"] for v in others.values()),
        "others_min_harmful_refused": min(v["harmful_refused"] for v in others.values()),
        "others": others,
    }
