"""The ``safety`` family: Ships per query and head, Sahara's head group, and ASR evidence.

Prompts: the organism's held-out harmful and benign requests, or a harmful-prompt file (and
optionally a benign one) for any other model. The per-head evidence is the attack success
rate on the harmful prompts with that head ablated (uniform attention). Parts are blocks of
heads, so a long Ships sweep resumes where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.families.base import Family, PartResult
from workbench.families.context import RunContext
from workbench.families.prompts import is_organism


@dataclass(frozen=True)
class SafetyFamilyConfig:
    """epsilon, rank, max_group: Ships/Sahara code defaults (1e-5, 1, 3). Generation and judge: the
    paper's 128 new tokens and 32-character minimum for real models (refusals often start after a
    preamble); the shipped organisms answer in a few words, so they default to 8 and 8. ``judge``:
    "workbench" (our phrase list and repetition filter) or "ships-paper" (Table 4's keywords)."""

    epsilon: float = 1e-5
    rank: int = 1
    max_group: int = 3
    n_prompts: int = 40
    max_new_tokens: int = 0  # 0: 128 (the paper's) for real models, 8 for the organisms
    min_chars: int = 0  # judge minimum length; 0: 32 (the paper's) for real models, 8 for the organisms
    judge: str = "workbench"
    harmful_file: str = ""
    benign_file: str = ""
    template: str = "raw"
    heads_per_part: int = 16


def _sample(ctx: RunContext, name: str, size: int, n: int) -> list[int]:
    """The run's seed picks the sample (the same for every part of the run), in the set's order."""
    return sorted(int(i) for i in ctx.rng("safety", "prompts", name).permutation(size)[:n])


def safety_prompts(model: Any, ctx: RunContext, cfg: SafetyFamilyConfig) -> tuple[list[torch.Tensor], list[torch.Tensor], str]:
    n = ctx.n_prompts or cfg.n_prompts
    from workbench.data.prompts import encode_prompts

    if cfg.harmful_file:
        from workbench.data.prompts import load_prompts

        harmful = encode_prompts(load_prompts(cfg.harmful_file)[:n], model, cfg.template)
        benign = encode_prompts(load_prompts(cfg.benign_file)[:n], model, cfg.template) if cfg.benign_file else []
        return harmful, benign, "file"
    if is_organism(model):
        from workbench.organisms.datasets import load_probes

        def pick(name: str) -> list[torch.Tensor]:
            probes = load_probes(name)
            return [torch.from_numpy(np.asarray(probes[i].prompt, dtype=np.int64)) for i in _sample(ctx, name, len(probes), n)]

        return pick("refusal-harmful-test"), pick("refusal-benign-test"), "organism-refusal-test"
    from workbench.data.registry import default_dataset

    def sample(kind: str) -> tuple[list[torch.Tensor], str]:
        data = default_dataset(kind)
        texts = [data.items[i] for i in _sample(ctx, data.name, len(data.items), n)]
        return encode_prompts(texts, model, cfg.template), data.source

    (harmful, source), (benign, _) = sample("harmful"), sample("harmless")
    return harmful, benign, source


def generation_settings(model: Any, cfg: SafetyFamilyConfig) -> tuple[int, int]:
    """(new tokens, judge minimum length): the config's, or the defaults for this kind of model."""
    organism = is_organism(model)
    new_tokens = cfg.max_new_tokens or (8 if organism else 128)
    min_chars = cfg.min_chars or (8 if organism else 32)
    return new_tokens, min_chars


class SafetyFamily(Family):
    name = "safety"
    config_class = SafetyFamilyConfig
    description = "heads whose removal breaks refusal (Ships, Sahara) with attack-success-rate evidence"
    primary_metric = "ships_mean"
    evidence_metric = "asr_when_ablated"

    def parts(self, model: Any, ctx: RunContext) -> list[str]:
        n = model.geometry.n_total_heads
        step = max(1, self.config.heads_per_part)
        return [f"heads-{s}-{min(s + step, n)}" for s in range(0, n, step)] + ["group"]

    def members(self, scores):
        """Heads whose single ablation lets at least half of the harmful prompts through."""
        values = np.nan_to_num(scores["asr_when_ablated"], nan=0.0)
        return [(int(l), int(h)) for l, h in zip(*np.nonzero(values >= 0.5))]

    def run_part(self, model: Any, ctx: RunContext, part: str) -> PartResult:
        from workbench.analysis.refusal import make_judge
        from workbench.analysis.safety import SafetyConfig, asr, sahara_search, ships_scores
        from workbench.analysis.scores import HeadScores

        cfg = self.config
        geo = model.geometry
        new_tokens, min_chars = generation_settings(model, cfg)
        judge = make_judge(cfg.judge, min_chars)
        scfg = SafetyConfig(epsilon=cfg.epsilon, rank=cfg.rank, max_group=cfg.max_group, max_new_tokens=new_tokens,
                            judge=judge)
        harmful, benign, source = safety_prompts(model, ctx, cfg)
        ctx.seed_torch(self.name, part)
        scores = HeadScores(self.name, geo.n_layers, geo.n_heads)
        if part.startswith("heads-"):
            lo, hi = (int(x) for x in part.split("-")[1:])
            heads = geo.all_heads()[lo:hi]
            ships = ships_scores(model, harmful, scfg, heads=heads, progress=lambda i, n: ctx.report(f"safety: Ships {part}", i, n))
            scores.add("ships_mean", ships.mean(0), "dataset-level Ships: mean KL at the last prompt token")
            asr_map = np.full((geo.n_layers, geo.n_heads), np.nan)
            for i, head in enumerate(heads):
                asr_map[head.layer, head.head] = asr(model, harmful, [head], scfg).asr
                ctx.report(f"safety: ASR {part}", i + 1, len(heads))
            scores.add("asr_when_ablated", asr_map, "attack success rate on harmful prompts with this head ablated")
            return PartResult(scores, {f"ships_{part}": ships}, {"prompt_source": source, "n_harmful": len(harmful),
                                                                 "judge": judge.name, "max_new_tokens": new_tokens})
        # the group part: Sahara, base ASR, per-query top-Ships ablation vs random heads
        sahara = sahara_search(model, harmful, scfg, progress=lambda i, n: ctx.report("safety: Sahara", i, n))
        scores.add("sahara_angle", sahara.step_scores[0], "Sahara step-1 subspace angle (degrees) with the head ablated")
        full = ships_scores(model, harmful, scfg)
        flat = full.reshape(len(harmful), -1)
        top_per_query = [[geo.all_heads()[int(i)]] for i in np.nanargmax(flat, axis=1)]
        rng = ctx.rng("safety", "random")
        random_per_query = [[geo.all_heads()[int(rng.integers(geo.n_total_heads))]] for _ in harmful]
        base = asr(model, harmful, [], scfg)
        top = asr(model, harmful, top_per_query, scfg)
        rand = asr(model, harmful, random_per_query, scfg)
        group = asr(model, harmful, sahara.group, scfg)
        refusal_benign = None
        if benign:
            b = asr(model, benign, [], scfg)
            refusal_benign = sum(v == "refusal" for v in b.verdicts) / len(b.verdicts)
        base_refusal = sum(v == "refusal" for v in base.verdicts) / len(base.verdicts)
        examples = [{"prompt": model.tokenizer.decode(p.tolist(), skip_special_tokens=True), "base": base.responses[i],
                     "top_ships_ablated": top.responses[i], "verdict_base": base.verdicts[i], "verdict_top": top.verdicts[i]}
                    for i, p in enumerate(harmful[:10])]
        artefacts = {
            "asr": {"base": base.asr, "top_ships_per_query": top.asr, "random_head_per_query": rand.asr,
                    "sahara_group": group.asr, "sahara_heads": [str(h) for h in sahara.group],
                    "base_refusal_harmful": base_refusal, "refusal_benign": refusal_benign},
            "sahara_steps": np.stack(sahara.step_scores),
            "safety_examples": examples,
        }
        summary = {"prompt_source": source, "n_harmful": len(harmful), "n_benign": len(benign), "base_asr": base.asr,
                   "asr_top_ships_per_query": top.asr, "asr_random_head": rand.asr, "asr_sahara_group": group.asr,
                   "sahara_group": [str(h) for h in sahara.group], "judge": judge.name, "max_new_tokens": new_tokens}
        return PartResult(scores, artefacts, summary)
