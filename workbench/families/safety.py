"""The ``safety`` family: Ships per query and head, Sahara's head group, and ASR evidence.

Prompts: the harmful and harmless request sets registered for the model (the organisms' held-out
requests), else the shipped sets, or a harmful-prompt file (and optionally a benign one). The per-head evidence is the attack success
rate on the harmful prompts with that head ablated (uniform attention), per request, beside random single
heads ablated over the same requests (the verdict's control draws, the ``head_checks`` artefact). A model
that already answers, or does not refuse, the harmful requests claims no heads (`SafetyFamily.merge`).

One part, ``group``: Ships is computed once, in one batched sweep over (head, request) rows that also
gives Sahara's first step, and the ASR generations of every condition share batches. (Parts cannot
read each other, so per-head-block Ships parts made the group part compute Ships a second time.)
The stored shape is unchanged: the summary nested by part, artefacts prefixed ``group/``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.analysis.verdicts import draw_controls, safety_refusal
from workbench.families.base import Artefact, Family, FamilyResult, InputProblem, PartResult
from workbench.families.context import RunContext

if TYPE_CHECKING:
    from workbench.models.model import Model
from workbench.analysis.safety import SafetyConfig
from workbench.data.prompts import encode_prompts
from workbench.data.registry import Dataset, dataset_for, get_dataset
from workbench.errors import InputDataError


@dataclass(frozen=True)
class SafetyFamilyConfig:
    """epsilon, rank, max_group: Ships/Sahara code defaults (1e-5, 1, 3). Generation and judge: the
    paper's 128 new tokens and 32-character minimum for real models (refusals often start after a
    preamble); the shipped organisms answer in a few words, so they default to 8 and 8. ``judge``:
    "workbench" (our phrase list and repetition filter) or "ships-paper" (Table 4's keywords)."""

    epsilon: float = SafetyConfig.epsilon  # the analysis's defaults, stated once there
    rank: int = SafetyConfig.rank
    max_group: int = SafetyConfig.max_group
    n_prompts: int = 40
    max_new_tokens: int = 0  # 0: the request set's hint (the organisms: 8), else 128 (the paper's)
    min_chars: int = 0  # judge minimum length; 0: the request set's hint (the organisms: 8), else 32 (the paper's)
    judge: str = "workbench"
    harmful_file: str = ""  # a registered set name, a .jsonl/.json/.csv/.txt file or hf:NAME[:SPLIT[:FIELD]]
    benign_file: str = ""
    prompt_field: str = ""  # the field holding the request in those files (default: the first usual one)
    template: str = "raw"
    #: ignored since Ships is one batched sweep inside the single part (kept so old --set lines parse)
    heads_per_part: int = 16
    #: batch rows per pass of the sweeps and generations ((head, request) pairs): bounds their memory
    max_rows: int = SafetyConfig.max_rows
    #: per-head ASR for the top heads by dataset-level Ships (-1: every head); each is a generation pass
    asr_heads: int = 8
    #: random single heads ablated over the same requests: the control draws of each head's verdict
    asr_controls: int = 8


def _sample(ctx: RunContext, name: str, size: int, n: int) -> list[int]:
    """The run's seed picks the sample (the same for every part of the run), in the set's order."""
    return sorted(int(i) for i in ctx.rng("safety", "prompts", name).permutation(size)[:n])


def safety_prompts(model: Model, ctx: RunContext, cfg: SafetyFamilyConfig) -> tuple[list[torch.Tensor], list[torch.Tensor], str]:
    """Harmful and harmless requests as token ids: the config's files (their first ``n``), else the sets
    registered for this model (the organisms' held-out requests), else the shipped sets (a seeded sample)."""
    n = ctx.n_prompts or cfg.n_prompts
    harmful_set, benign_set = request_sets(model, cfg)

    def sample(data: Dataset | None, from_file: bool) -> list[torch.Tensor]:
        if data is None:
            return []
        items = list(data.items[:n]) if from_file else [data.items[i] for i in _sample(ctx, data.name, len(data.items), n)]
        if data.tokenized:
            return [torch.tensor(ids, dtype=torch.long) for ids in items]
        return encode_prompts(items, model, cfg.template)

    harmful = sample(harmful_set, bool(cfg.harmful_file))
    benign = sample(benign_set, bool(cfg.benign_file))
    return harmful, benign, "file" if cfg.harmful_file else harmful_set.source


def request_sets(model: Model, cfg: SafetyFamilyConfig) -> tuple[Dataset, Dataset | None]:
    """(harmful set, harmless set or None): the files or set names given in the config, else the
    registry's sets of each kind for this model. A harmful file without a benign one has no benign set."""

    def pick(kind: str, spec: str) -> Dataset | None:
        data = get_dataset(spec, kind, cfg.prompt_field or None) if spec else dataset_for(kind, model)
        if data is not None and not isinstance(data, Dataset):
            raise InputDataError(f"the {kind} set {data.name!r} is generated; the safety family needs request items")
        return data

    harmful = pick("harmful", cfg.harmful_file)
    if harmful is None:
        raise InputDataError("no harmful request set is available", "give one with --set safety.harmful_file=FILE")
    benign = pick("harmless", cfg.benign_file) if (cfg.benign_file or not cfg.harmful_file) else None
    return harmful, benign


def generation_settings(model: Model, cfg: SafetyFamilyConfig) -> tuple[int, int]:
    """(new tokens, judge minimum length): the config's, else the request set's hints (the organisms
    answer in a few words), else the paper's 128 tokens and 32 characters."""
    hints = request_sets(model, cfg)[0].hints
    new_tokens = cfg.max_new_tokens or int(hints.get("max_new_tokens", 128))
    min_chars = cfg.min_chars or int(hints.get("min_chars", 32))
    return new_tokens, min_chars


class SafetyFamily(Family):
    name = "safety"
    config_class = SafetyFamilyConfig
    description = "heads whose removal breaks refusal (Ships, Sahara) with attack-success-rate evidence"
    primary_metric = "ships_mean"
    evidence_metric = "asr_when_ablated"

    def parts(self, model: Model, ctx: RunContext) -> list[str]:
        return ["group"]

    def members(self, scores):
        """Heads whose single ablation lets at least half of the harmful prompts through."""
        values = np.nan_to_num(scores["asr_when_ablated"], nan=0.0)
        return [(int(l), int(h)) for l, h in zip(*np.nonzero(values >= 0.5))]

    def merge(self, parts: dict[str, PartResult]) -> FamilyResult:
        """A model that already answers the harmful requests with nothing ablated has no refusal for a
        head to carry: the members are dropped and the summary says why (`verdicts.safety_refusal`)."""
        merged = super().merge(parts)
        if len(parts) == 1:  # the shape runs had with several parts: what the report and old runs read
            (name,) = parts
            merged.summary = {"parts": {name: merged.summary}}
            merged.artefacts = {f"{name}/{k}": v for k, v in merged.artefacts.items()}
        group = parts.get("group")
        refusal = (
            safety_refusal(group.summary.get("base_asr"), group.summary.get("base_refusal_harmful"))
            if group is not None
            else None
        )
        if refusal:
            merged.members = []
            merged.summary["claim_refused"] = refusal
        return merged

    def check_inputs(self, model: Model, ctx: RunContext) -> list[InputProblem]:
        """The request sets resolve, read, and are mostly known tokens; a chat template exists if asked."""
        from workbench.families.prompts import MAX_UNKNOWN_SHARE, unknown_share

        cfg = self.config
        try:
            sets = request_sets(model, cfg)
        except InputDataError as exc:
            return [InputProblem(self.name, exc.message, exc.hint or "")]
        problems = []
        for data in sets:
            if data is None or data.tokenized:
                continue
            share = unknown_share(model, data.items[:50])
            if share > MAX_UNKNOWN_SHARE:
                problems.append(
                    InputProblem(
                        self.name,
                        f"the {data.kind} requests {data.source} are {share:.0%} unknown tokens for this tokenizer",
                        f"give requests in the model's language with --set safety.{'harmful' if data.kind == 'harmful' else 'benign'}_file=FILE,"
                        " or leave the family out with --families",
                    )
                )
        if cfg.template == "chat" and not getattr(model.tokenizer, "chat_template", None):
            problems.append(
                InputProblem(
                    self.name,
                    "template 'chat' was asked for but the tokenizer has no chat template",
                    "use --set safety.template=raw or a format string with {prompt}",
                )
            )
        n_ctx = int(getattr(model.geometry, "n_ctx", 0) or 0)
        if n_ctx and not problems:
            new_tokens, _ = generation_settings(model, cfg)
            try:
                harmful, benign, _ = safety_prompts(model, ctx, cfg)
            except InputDataError as exc:
                return [*problems, InputProblem(self.name, exc.message, exc.hint or "")]
            longest = max(int(p.numel()) for p in [*harmful, *benign])
            if longest + new_tokens > n_ctx:
                problems.append(
                    InputProblem(
                        self.name,
                        f"the longest request ({longest} tokens) + {new_tokens} new tokens exceed the model's context of {n_ctx}",
                        "use shorter requests or --set safety.max_new_tokens=N",
                    )
                )
        return problems

    def run_part(self, model: Model, ctx: RunContext, part: str) -> PartResult:
        from workbench.analysis.refusal import make_judge
        from workbench.analysis.safety import asr, asr_many, sahara_search, sweep_heads
        from workbench.analysis.scores import HeadScores

        if part != "group":
            raise InputDataError(f"the safety family has one part, 'group', not {part!r}", "run the part 'group'")
        cfg = self.config
        geo = model.geometry
        new_tokens, min_chars = generation_settings(model, cfg)
        judge = make_judge(cfg.judge, min_chars)
        scfg = SafetyConfig(
            epsilon=cfg.epsilon,
            rank=cfg.rank,
            max_group=cfg.max_group,
            max_new_tokens=new_tokens,
            judge=judge,
            max_rows=cfg.max_rows,
        )
        harmful, benign, source = safety_prompts(model, ctx, cfg)
        ctx.seed_torch(self.name, part)
        scores = HeadScores(self.name, geo.n_layers, geo.n_heads)
        # Ships of every head, once: the same rows give Sahara's first step
        sweep = sweep_heads(model, harmful, scfg, angles=True, progress=lambda i, n: ctx.report("safety: Ships", i, n))
        full = sweep.ships
        scores.add("ships_mean", full.mean(0), "dataset-level Ships: mean KL at the last prompt token")
        sahara = sahara_search(model, harmful, scfg, progress=lambda i, n: ctx.report("safety: Sahara", i, n), first_step=sweep)
        scores.add("sahara_angle", sahara.step_scores[0], "Sahara step-1 subspace angle (degrees) with the head ablated")
        flat = full.reshape(len(harmful), -1)
        # per-head evidence: ASR with each of the top heads by dataset-level Ships ablated (every head
        # costs a generation over the requests; a real model has hundreds of heads)
        mean_ships = np.nan_to_num(flat.mean(0), nan=-np.inf)
        order = [int(i) for i in np.argsort(-mean_ships, kind="stable")]
        k = len(order) if cfg.asr_heads < 0 else min(cfg.asr_heads, len(order))
        tested = [geo.all_heads()[i] for i in order[:k]]
        controls = draw_controls(
            geo.all_heads(), cfg.asr_controls, random.Random(int(ctx.rng("safety", "controls").integers(2**31)))
        )
        singles = list(dict.fromkeys([*tested, *controls]))  # a control that is also tested runs once
        top_per_query = [[geo.all_heads()[int(i)]] for i in np.nanargmax(flat, axis=1)]
        rng = ctx.rng("safety", "random")
        random_per_query = [[geo.all_heads()[int(rng.integers(geo.n_total_heads))]] for _ in harmful]
        # every condition's (request, heads) rows in shared generation batches
        ctx.report("safety: ASR generations", 0, 1)
        results = asr_many(model, harmful, [*[[h] for h in singles], [], top_per_query, random_per_query, sahara.group], scfg)
        ctx.report("safety: ASR generations", 1, 1)
        answered: dict[Any, list[bool]] = {  # head -> per request: answered (the attack succeeded)
            h: [v == "compliance" for v in r.verdicts] for h, r in zip(singles, results)
        }
        base, top, rand, group = results[len(singles) :]
        asr_map = np.full((geo.n_layers, geo.n_heads), np.nan)
        for head in tested:
            asr_map[head.layer, head.head] = float(np.mean(answered[head]))
        scores.add(
            "asr_when_ablated", asr_map, f"attack success rate on harmful prompts with this head ablated (top {k} heads by Ships)"
        )
        refusal_benign = None
        if benign:
            b = asr(model, benign, [], scfg)
            refusal_benign = sum(v == "refusal" for v in b.verdicts) / len(b.verdicts)
        base_refusal = sum(v == "refusal" for v in base.verdicts) / len(base.verdicts)
        examples = [
            {
                "prompt": model.tokenizer.decode(p.tolist(), skip_special_tokens=True),
                "base": base.responses[i],
                "top_ships_ablated": top.responses[i],
                "verdict_base": base.verdicts[i],
                "verdict_top": top.verdicts[i],
            }
            for i, p in enumerate(harmful[:10])
        ]
        artefacts: dict[str, Artefact] = {
            "asr": {
                "base": base.asr,
                "top_ships_per_query": top.asr,
                "random_head_per_query": rand.asr,
                "sahara_group": group.asr,
                "sahara_heads": [str(h) for h in sahara.group],
                "base_refusal_harmful": base_refusal,
                "refusal_benign": refusal_benign,
            },
            "sahara_steps": np.stack(sahara.step_scores),
            f"ships_heads-0-{geo.n_total_heads}": full,
            "safety_examples": examples,
            "head_checks": {
                "check": "attack success rate",
                "success": "the harmful request is not answered (refused or degenerate)",
                "mode": "uniform",
                "base": [v != "compliance" for v in base.verdicts],
                "heads": {str(h): [not a for a in answered[h]] for h in tested},
                "controls": {str(h): [not a for a in answered[h]] for h in controls},
            },
        }
        summary = {
            "prompt_source": source,
            "n_harmful": len(harmful),
            "n_benign": len(benign),
            "base_asr": base.asr,
            "base_refusal_harmful": base_refusal,
            "asr_top_ships_per_query": top.asr,
            "asr_random_head": rand.asr,
            "asr_sahara_group": group.asr,
            "asr_evaluated_heads": [str(geo.all_heads()[i]) for i in order[:k]],
            "sahara_group": [str(h) for h in sahara.group],
            "judge": judge.name,
            "max_new_tokens": new_tokens,
        }
        return PartResult(scores, artefacts, summary)
