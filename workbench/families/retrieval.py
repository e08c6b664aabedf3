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
from workbench.errors import InputDataError
from workbench.families.base import Artefact, Family, FamilyResult, InputProblem, PartResult
from workbench.families.context import RunContext
from workbench.families.prompts import MAX_UNKNOWN_SHARE, prompt_length, text_input_problems, unknown_share, usable_text
from workbench.interventions.kv_budget import STREAMING_RECENT, STREAMING_SINK

if TYPE_CHECKING:
    from workbench.models.model import Model


@dataclass(frozen=True)
class RetrievalFamilyConfig(RetrievalConfig):
    """The analysis's `RetrievalConfig` (threshold, gate: Wu et al. 2024; segment/repeats:
    RazorAttention, scaled) plus the trials, the ablation evidence and the budget curve
    (StreamingLLM-style sink 4 + recent window).

    ``context``: the needle context in tokens; 0 follows ``--max-tokens`` (cut to what the model can
    hold with the answer, said in the summary), any other value is used as given and refused when the
    model cannot hold it (``--context N`` sets it to N). ``haystack``: "" for the generated haystack
    (`workbench.data.haystack`), else a text file or a dataset name (``prose``, ``hf:NAME...``)."""

    n_trials: int = 16
    context: int = 0
    haystack: str = ""
    evidence_heads: int = 4
    compare_k: int = 3
    n_random: int = 3
    n_controls: int = 8  # random single heads ablated: the control draws of each head's verdict
    sink: int = STREAMING_SINK
    recent: int = STREAMING_RECENT
    budget_fractions: tuple = (0.05, 0.1, 0.2, 0.4)  # shares of KV heads kept on the full cache
    kv_reduce: str = "max"  # a KV head's score from its query heads: max (RazorAttention, DuoAttention) or mean
    # the causal checks run one condition (ablated heads, a KV budget) per batch row of a trial's repeated
    # sequence: at most check_batch rows and check_batch_tokens tokens per pass
    check_batch: int = 8
    check_batch_tokens: int = 16384


#: new tokens a model's own needle set may ask for (the organisms' answers are a few tokens)
GENERATED_ANSWER_ROOM = 16
#: codes drawn for a user's haystack before giving up on one that does not occur in it
_CODE_DRAWS = 64


@dataclass(frozen=True)
class NeedleSetup:
    """The needle trials of a run and what a reader of the summary needs to know about them."""

    trials: list[Any]
    source: str  # the trials' source ("text-needle (shipped:prose)", an organism's set)
    context: int  # tokens per trial asked for
    haystack: str = ""  # where the haystack came from ("" for a model's own needle set)
    notes: tuple[str, ...] = ()  # the context was cut to the model, the haystack repeated ...


def answer_room(model: Model, cfg: RetrievalFamilyConfig) -> int:
    """New tokens a trial's answer needs inside the model's context."""
    from workbench.data.needles import REFERENCE_MAX_NEW_TOKENS

    own = model_dataset("needles", model)
    return cfg.max_new_tokens or (GENERATED_ANSWER_ROOM if isinstance(own, GeneratedSet) else REFERENCE_MAX_NEW_TOKENS)


def needle_context(model: Model, ctx: RunContext, cfg: RetrievalFamilyConfig) -> tuple[int, str]:
    """(needle context, note) for this model and run: `fit_needle_context`."""
    n_ctx = int(getattr(model.geometry, "n_ctx", 0) or 0)
    return fit_needle_context(cfg.context, ctx.max_tokens, n_ctx, answer_room(model, cfg))


def fit_needle_context(context: int, max_tokens: int, n_ctx: int, room: int) -> tuple[int, str]:
    """(needle context, note): ``context`` (``retrieval.context``) as given, refused when a model of
    ``n_ctx`` positions (0: unknown) cannot hold it plus a ``room``-token answer; 0 follows ``max_tokens``,
    cut to what the model holds (the note says so). No model needed: the cost plan uses it too."""
    fits = n_ctx - room if n_ctx > 0 else None  # None: the model states no length
    if fits is not None and fits < 2:
        raise InputDataError(
            f"the model's context of {n_ctx} tokens leaves no room for a needle and its {room}-token answer",
            "lower retrieval.max_new_tokens, or skip the retrieval family",
        )
    if context:
        if context < 2:
            raise InputDataError(f"retrieval.context={context} is too short", "give 0 (follow --max-tokens) or at least 2")
        if fits is not None and context > fits:
            raise InputDataError(
                f"a needle context of {context} tokens (--context or retrieval.context) plus its {room}-token "
                f"answer does not fit the model's context of {n_ctx} tokens",
                f"give --context {fits} or less, or --set retrieval.context={fits} (or 0 to follow --max-tokens)",
            )
        return context, ""
    asked = max(2, max_tokens)
    if fits is not None and asked > fits:
        return fits, (
            f"needle context {fits} tokens, not --max-tokens {asked}: the model holds {n_ctx} tokens and the answer needs {room}"
        )
    return asked, ""


def _default_sentences(model: Model, rng: np.random.Generator) -> tuple[list[str], str]:
    """Sentences for the generated haystack: the model's readable text set (the shipped prose by
    default), else sentences of the tokenizer's own vocabulary."""
    from workbench.data.haystack import split_sentences, vocabulary_sentences

    text, _ = usable_text(model, model_dataset("text", model))
    if text is not None:
        return split_sentences([str(x) for x in text.items]), text.source
    return vocabulary_sentences(model.tokenizer, model.geometry.vocab_size, rng), "vocabulary words"


def needle_setup(model: Model, ctx: RunContext, cfg: RetrievalFamilyConfig) -> NeedleSetup:
    """The run's needle trials: the model's own needle set when it has one, else a text needle
    ("The secret code is NNNN .") in a haystack: ``retrieval.haystack`` (a file or a dataset), else the
    prompt file, else a haystack generated from the run seed to the needle context's length."""
    from workbench.data.haystack import count_tokens, generated_haystack, load_haystack
    from workbench.data.needles import text_needle_trials

    n = ctx.n_prompts or cfg.n_trials
    own = model_dataset("needles", model)
    context, note = needle_context(model, ctx, cfg)
    notes = [note] if note else []
    rng = ctx.rng("retrieval", "needles")
    if isinstance(own, GeneratedSet):
        return NeedleSetup(own.make(model, rng, n, context), own.source, context, "", tuple(notes))
    tok = model.tokenizer
    if cfg.haystack:
        hay = load_haystack(cfg.haystack, tok)
        share = unknown_share(model, [hay.text[:20000]])
        if share > MAX_UNKNOWN_SHARE:
            raise InputDataError(
                f"retrieval.haystack={cfg.haystack!r} is {share:.0%} unknown tokens for this tokenizer",
                "give a haystack in the model's language",
            )
        text, where, hay_source = hay.text, f"haystack {hay.source}", hay.source
    elif ctx.prompts:
        text = " ".join(ctx.prompts)
        where = hay_source = "prompt file"
    else:
        text = ""
        where = hay_source = ""
    code = str(int(rng.integers(1000, 9999)))
    if text:  # a user's text: draw again while the code occurs in it (the needle must be the only copy)
        for _ in range(_CODE_DRAWS):
            if code not in text:
                break
            code = str(int(rng.integers(1000, 9999)))
        else:
            raise InputDataError(
                f"every needle code drawn occurs in the haystack ({hay_source})", "use a haystack with fewer numbers"
            )
        have = count_tokens(tok, text)
        if have < context:
            notes.append(f"the haystack ({hay_source}) has {have} tokens: repeated to fill the {context}-token context")
    needle, question = f"The secret code is {code} .", "What is the secret code ?"
    if not text:
        sentences, pool = _default_sentences(model, ctx.rng("retrieval", "haystack", "words"))
        answer_ids = tok(" " + code, add_special_tokens=False)["input_ids"]
        hay = generated_haystack(
            tok,
            context,
            ctx.rng("retrieval", "haystack"),
            sentences,
            avoid=(code, "secret code"),
            avoid_ids=(answer_ids,),
            source=f"generated from {pool}",
        )
        text, where = hay.text, pool
        hay_source = f"{hay.source} (seed {ctx.seed}; {hay.note})"
    depths = [float(d) for d in np.linspace(0.1, 0.9, max(1, n))]
    trials = text_needle_trials(tok, text, needle, question, code, [context], depths)
    return NeedleSetup(trials, f"text-needle ({where})", context, hay_source, tuple(notes))


def needle_trials(model: Model, ctx: RunContext, cfg: RetrievalFamilyConfig):
    """(trials, source): `needle_setup` without its notes (the temporal family's budget decision)."""
    setup = needle_setup(model, ctx, cfg)
    return setup.trials, setup.source


def check_conditions(cfg: RetrievalFamilyConfig, n_heads: int, n_kv_heads: int) -> int:
    """Distinct conditions of the causal-check sweep (an upper bound: random draws that happen to be
    equal, or a control that is also tested, run once), for ``n_heads`` query heads and ``n_kv_heads``
    KV heads in all: base + single heads + top and random sets + budgets. A budget with no KV head on the
    full cache is one condition (everything streams) whatever its draws; one with every KV head is the
    base. Each trial costs ceil(U / R) passes, R = ``BatchLimits(check_batch, check_batch_tokens).rows_for``
    of its prompt + answer - 1 tokens."""
    singles = min(min(cfg.evidence_heads, n_heads) + cfg.n_controls, n_heads)
    compare = 1 + cfg.n_random
    n_full = [int(round(f * n_kv_heads)) for f in cfg.budget_fractions]
    partial = [n for n in n_full if 0 < n < n_kv_heads]  # each: its ranked set (shared by equal n) and 2 draws
    budgets = len(set(partial)) + 2 * len(partial) + (1 if 0 in n_full else 0)
    return 1 + singles + compare + budgets


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
        """The text fallback warning, and the needle trials built once (cheap: no forward pass), so a
        context the model cannot hold, a missing or empty haystack, or a haystack holding the answer
        is refused before any work; a cut context or a repeated haystack is a warning."""
        problems = [] if self.config.haystack else text_input_problems(model, ctx, self.name)
        try:
            setup = needle_setup(model, ctx, self.config)
        except InputDataError as exc:
            return [*problems, InputProblem(self.name, exc.message, exc.hint or "")]
        return problems + [InputProblem(self.name, note, "", fatal=False) for note in setup.notes]

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
            NeedleCondition,
            ablation_condition,
            budget_draws,
            budget_result,
            comparison_conditions,
            comparison_result,
            comparison_sets,
            detector_scores,
            echo_induction_scores,
            needle_outcomes_many,
            razor_selection,
            repeated_random_tokens,
            retrieval_scores,
        )
        from workbench.analysis.sinks import BatchLimits
        from workbench.interventions.kv_budget import kv_head_ranking

        cfg = self.config
        geo = model.geometry
        ctx.seed_torch(self.name, part)
        setup = needle_setup(model, ctx, cfg)
        trials, source = setup.trials, setup.source
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
        # Every causal check is a condition of one batched sweep (`needle_outcomes_many`: one condition per
        # batch row, equal conditions run once): the base; each tested head and the random single heads
        # ablated (each head's verdict and its control draws); the top-k vs random-k sets; every KV budget.
        k = min(cfg.evidence_heads, geo.n_total_heads)
        tested = ranking[:k]
        controls = draw_controls(
            geo.all_heads(), cfg.n_controls, random.Random(int(ctx.rng("retrieval", "controls").integers(2**31)))
        )
        singles = list(dict.fromkeys([*tested, *controls]))
        compare_k = min(cfg.compare_k, geo.n_total_heads // 2)
        top, random_sets = comparison_sets(
            model, ranking, compare_k, cfg.n_random, seed=int(ctx.rng("retrieval", "random").integers(2**31))
        )
        kv_ranking = kv_head_ranking(scores[ranking_metric], geo, cfg.kv_reduce)
        draws = budget_draws(
            model,
            trials,
            kv_ranking,
            list(cfg.budget_fractions),
            cfg.sink,
            cfg.recent,
            seed=int(ctx.rng("retrieval", "budget").integers(2**31)),
        )
        single_conds = [ablation_condition(model, [h]) for h in singles]
        compare_conds = comparison_conditions(model, top, random_sets)
        budget_conds = draws.conditions(model)
        checked = needle_outcomes_many(
            model,
            trials,
            [NeedleCondition(), *single_conds, *compare_conds, *budget_conds],
            "uniform",
            BatchLimits(cfg.check_batch, cfg.check_batch_tokens),
            progress=lambda i, n: ctx.report("retrieval: causal checks (batched)", i, n),
        )
        base_ok = checked[0]
        base_acc = float(np.mean(base_ok))
        outcomes: dict[Any, list[bool]] = dict(zip(singles, checked[1 : 1 + len(singles)]))
        drop = np.full((geo.n_layers, geo.n_heads), np.nan)
        for head in tested:
            drop[head.layer, head.head] = base_acc - float(np.mean(outcomes[head]))
        scores.add("ablation_accuracy_drop", drop, "needle accuracy lost when this head attends uniformly")
        at = 1 + len(singles)
        comparison = comparison_result(compare_k, top, random_sets, checked[at : at + len(compare_conds)], "uniform")
        curve = budget_result(draws, checked[at + len(compare_conds) :])
        ctx.report("retrieval: top vs random", 1, 1)
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
            "haystack": setup.haystack,
            "needle_context": setup.context,
            "context_notes": list(setup.notes),
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
