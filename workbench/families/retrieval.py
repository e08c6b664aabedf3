"""The ``retrieval`` family: retrieval, echo, induction and previous-token heads, with causal checks.

Scores: the Wu et al. retrieval score on needle trials (the model's own needle set, such as the
organisms' key/value needles with distractors, or a text needle in the user's prompts / the shipped prose), RazorAttention echo and
induction scores on a repeated random segment, and TransformerLens-style detector scores.
Evidence: needle outcomes per trial with each top head ablated (uniform attention) and with random
single heads ablated (the control draws of each head's verdict, `workbench.analysis.verdicts`; stored
as the ``head_checks`` artefact), the top-k vs random-k comparison, and the KV-budget curve (top heads
on the full cache, the rest sink + recent). RazorAttention's and TransformerLens's induction scores
keep their own names (``razor_induction_score``, ``tl_induction_score``). A model that fails the needle
without ablation claims no heads (`RetrievalFamily.merge`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.analysis.retrieval import RAZOR_INDUCTION, RetrievalConfig
from workbench.analysis.verdicts import draw_controls, retrieval_refusal
from workbench.data.registry import GeneratedSet, model_dataset
from workbench.families.base import Artefact, Family, FamilyResult, InputProblem, PartResult
from workbench.families.context import RunContext
from workbench.families.prompts import prompt_length, text_input_problems, usable_text
from workbench.interventions.kv_budget import STREAMING_RECENT, STREAMING_SINK

if TYPE_CHECKING:
    from workbench.models.model import Model


@dataclass(frozen=True)
class RetrievalFamilyConfig(RetrievalConfig):
    """The analysis's `RetrievalConfig` (threshold, gate: Wu et al. 2024; segment/repeats:
    RazorAttention, scaled) plus the trials, the ablation evidence and the budget curve
    (StreamingLLM-style sink 4 + recent window)."""

    n_trials: int = 16
    context: int = 512
    evidence_heads: int = 4
    compare_k: int = 3
    n_random: int = 3
    n_controls: int = 8  # random single heads ablated: the control draws of each head's verdict
    sink: int = STREAMING_SINK
    recent: int = STREAMING_RECENT
    budget_fractions: tuple = (0.05, 0.1, 0.2, 0.4)  # shares of KV heads kept on the full cache
    kv_reduce: str = "max"  # a KV head's score from its query heads: max (RazorAttention, DuoAttention) or mean


#: new tokens a model's own needle set may ask for (the organisms' answers are a few tokens)
GENERATED_ANSWER_ROOM = 16


def needle_trials(model: Model, ctx: RunContext, cfg: RetrievalFamilyConfig):
    from workbench.data.needles import REFERENCE_MAX_NEW_TOKENS, text_needle_trials

    n = ctx.n_prompts or cfg.n_trials
    own = model_dataset("needles", model)
    # the answer is generated after the prompt: leave it room inside the model's context
    answer_room = cfg.max_new_tokens or (GENERATED_ANSWER_ROOM if isinstance(own, GeneratedSet) else REFERENCE_MAX_NEW_TOKENS)
    n_ctx = int(getattr(model.geometry, "n_ctx", 0) or 0)
    context = min(cfg.context, prompt_length(model, ctx), n_ctx - answer_room if n_ctx > answer_room else cfg.context)
    rng = ctx.rng("retrieval", "needles")
    if isinstance(own, GeneratedSet):
        return own.make(model, rng, n, context), own.source
    text, _ = usable_text(model, model_dataset("text", model))
    if ctx.prompts:
        haystack = " ".join(ctx.prompts)
    elif text is not None:
        haystack = "\n\n".join(text.items)
    else:  # the shipped prose is unknown tokens for this tokenizer: words of its own vocabulary
        words = [model.tokenizer.decode([int(i)]) for i in rng.integers(4, model.geometry.vocab_size, 400)]
        haystack = " ".join(w.strip() for w in words if w.strip()) + " ."
    code = str(int(rng.integers(1000, 9999)))
    depths = [float(d) for d in np.linspace(0.1, 0.9, max(1, n))]
    trials = text_needle_trials(
        model.tokenizer, haystack, f"The secret code is {code} .", "What is the secret code ?", code, [context], depths
    )
    where = "prompt file" if ctx.prompts else (text.source if text is not None else "random vocabulary words")
    return trials, f"text-needle ({where})"


def ranked_heads(scores: Any, metric: str) -> list:
    """Heads by ``metric``, ties (common: many heads copy every needle token, score 1.0) broken by the
    attention probability of their copies, so the sharpest copy heads come first."""
    tie = scores.metrics.get("copy_attention") if metric == "retrieval_score" else None
    values = scores[metric]
    heads = [h for h, _ in scores.ranked(metric)]

    def key(h):
        v = values[h.layer, h.head]
        t = tie[h.layer, h.head] if tie is not None else 0.0
        return (-(v if np.isfinite(v) else -np.inf), -(t if np.isfinite(t) else -np.inf))

    return sorted(heads, key=key)


class RetrievalFamily(Family):
    name = "retrieval"
    config_class = RetrievalFamilyConfig
    description = "heads that copy from far context (needle retrieval), echo, induction and previous-token heads"
    primary_metric = "retrieval_score"
    evidence_metric = "ablation_accuracy_drop"

    def members(self, scores):
        values = scores["retrieval_score"]
        return [(int(l), int(h)) for l, h in zip(*np.nonzero(np.nan_to_num(values) > self.config.threshold))]

    def check_inputs(self, model: Model, ctx: RunContext) -> list[InputProblem]:
        return text_input_problems(model, ctx, self.name)

    def merge(self, parts: dict[str, PartResult]) -> FamilyResult:
        """A model that fails the needle with nothing ablated has no retrieval heads to claim: the
        members are dropped and the summary says why (`workbench.analysis.verdicts.retrieval_refusal`)."""
        merged = super().merge(parts)
        refusal = retrieval_refusal(merged.summary.get("needle_accuracy"))
        if refusal:
            merged.members = []
            merged.summary["claim_refused"] = refusal
        return merged

    def run_part(self, model: Model, ctx: RunContext, part: str) -> PartResult:
        from workbench.analysis.retrieval import (
            detector_scores,
            echo_induction_scores,
            kv_budget_curve,
            needle_outcomes,
            razor_selection,
            repeated_random_tokens,
            retrieval_scores,
            top_vs_random_ablation,
        )
        from workbench.interventions.ablation import ablate_heads

        cfg = self.config
        geo = model.geometry
        ctx.seed_torch(self.name, part)
        trials, source = needle_trials(model, ctx, cfg)
        rcfg = cfg  # the family config is a RetrievalConfig
        report = retrieval_scores(model, trials, rcfg, progress=lambda i, n: ctx.report("retrieval: needles", i, n))
        scores = report.scores

        special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
        pool = [i for i in range(geo.vocab_size) if i not in special]
        seg = min(cfg.segment, max(8, (prompt_length(model, ctx) - 1) // cfg.repeats))
        probe = repeated_random_tokens(
            pool, seg, cfg.repeats, geo.bos.token_id, seed=int(ctx.rng("retrieval", "razor").integers(2**31))
        )
        echo = echo_induction_scores(model, probe, seg, offset=1 if geo.bos.token_id is not None else 0)
        detectors = detector_scores(model, probe)
        for src in (echo, detectors):
            for metric, values in src.metrics.items():
                scores.add(metric, values, src.descriptions.get(metric, ""))
        ctx.report("retrieval: echo/induction", 1, 1)

        ranking_metric = "retrieval_score" if report.n_counted else RAZOR_INDUCTION
        ranking = ranked_heads(scores, ranking_metric)
        # Each head's verdict: needle outcomes per trial with nothing, the head, and random single heads
        # ablated (the control draws; a drawn head that is also tested is not run twice).
        base_ok = needle_outcomes(model, trials)
        base_acc = float(np.mean(base_ok))
        outcomes: dict[Any, list[bool]] = {}

        def ablated(head: Any) -> list[bool]:
            if head not in outcomes:
                with ablate_heads(model, [head], mode="uniform"):
                    outcomes[head] = needle_outcomes(model, trials)
            return outcomes[head]

        drop = np.full((geo.n_layers, geo.n_heads), np.nan)
        k = min(cfg.evidence_heads, geo.n_total_heads)
        tested = ranking[:k]
        for i, head in enumerate(tested):
            drop[head.layer, head.head] = base_acc - float(np.mean(ablated(head)))
            ctx.report("retrieval: single-head ablations", i + 1, k)
        scores.add("ablation_accuracy_drop", drop, "needle accuracy lost when this head attends uniformly")
        controls = draw_controls(
            geo.all_heads(), cfg.n_controls, random.Random(int(ctx.rng("retrieval", "controls").integers(2**31)))
        )
        for i, head in enumerate(controls):
            ablated(head)
            ctx.report("retrieval: random-head controls", i + 1, len(controls))

        comparison = top_vs_random_ablation(
            model,
            trials,
            ranking,
            min(cfg.compare_k, geo.n_total_heads // 2),
            cfg.n_random,
            seed=int(ctx.rng("retrieval", "random").integers(2**31)),
        )
        ctx.report("retrieval: top vs random", 1, 1)
        from workbench.interventions.kv_budget import kv_head_ranking

        kv_ranking = kv_head_ranking(scores[ranking_metric], geo, cfg.kv_reduce)
        curve = kv_budget_curve(
            model,
            trials,
            kv_ranking,
            list(cfg.budget_fractions),
            cfg.sink,
            cfg.recent,
            seed=int(ctx.rng("retrieval", "budget").integers(2**31)),
        )
        ctx.report("retrieval: KV budget", 1, 1)
        hits = [
            {"trial": r.index, "layer": l, "head": h, "position": pos, "recall": r.recall}
            for r in report.trials
            for (l, h, pos) in r.hits
        ]
        razor = razor_selection(scores, geo.n_kv_heads, rcfg)
        artefacts: dict[str, Artefact] = {
            "retrieval_hits": hits,
            "needle_trials": [
                {
                    "trial": r.index,
                    "exact": r.exact,
                    "recall": r.recall,
                    "answer_text": model.tokenizer.decode(trials[r.index].answer.tolist()),
                    "generated_text": model.tokenizer.decode(r.generated),
                    "generated": r.generated,
                    "answer": trials[r.index].answer.tolist(),
                    "answer_span": list(trials[r.index].answer_span),
                    "depth": trials[r.index].depth,
                }
                for r in report.trials
            ],
            "ablation_comparison": {
                "metric": ranking_metric,
                "k": comparison.k,
                "mode": comparison.mode,
                "base_accuracy": comparison.base_accuracy,
                "top_heads": [str(h) for h in comparison.top_heads],
                "top_accuracy": comparison.top_accuracy,
                "random_heads": [[str(h) for h in s] for s in comparison.random_heads],
                "random_accuracies": comparison.random_accuracies,
            },
            "kv_budget_curve": {
                "fractions": curve.fractions,
                "cache_share": curve.cache_share,
                "ranked_accuracy": curve.ranked_accuracy,
                "random_accuracy": curve.random_accuracy,
                "full_accuracy": curve.full_accuracy,
                "sink": curve.sink,
                "recent": curve.recent,
                "method": "retrieval-score head selection with a DuoAttention-style mask (not DuoAttention)",
                "counted_per": "KV head",
                "kv_reduce": cfg.kv_reduce,
                "kv_heads_ranked": [f"L{l}KV{k}" for l, k in kv_ranking],
            },
            "razor_selection": {k: [list(x) for x in v] for k, v in razor.items()},
            "head_checks": {
                "check": "needle accuracy",
                "success": "the greedy answer is exactly the expected one",
                "mode": "uniform",
                "base": base_ok,
                "heads": {str(h): outcomes[h] for h in tested},
                "controls": {str(h): outcomes[h] for h in controls},
            },
        }
        summary = {
            "trial_source": source,
            "n_trials": len(trials),
            "context_tokens": int(np.mean([t.context_len for t in trials])),
            "needle_accuracy": report.accuracy,
            "counted_trials": report.n_counted,
            "n_retrieval_heads": len(self.members(scores)),
            "top_k_ablation_accuracy": comparison.top_accuracy,
            "random_k_ablation_accuracy": comparison.random_mean,
            "ranking_metric": ranking_metric,
            "segment": seg,
        }
        return PartResult(scores, artefacts, summary)
