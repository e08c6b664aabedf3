"""The ``temporal`` family: q-similarity, pattern classes, spectra, query predictability,
and a decision that uses them (per-layer KV budgets from q-similarity vs a uniform budget).

Inputs by kind from the dataset registry: text prompts (`family_prompts`), a periodic set with a
known period when the model has one (the organisms), and the model's own needle set for the
budget decision (a needle task the model can actually do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.analysis.temporal import TemporalConfig
from workbench.data.registry import GeneratedSet, model_dataset
from workbench.families.base import Family, InputProblem, PartResult
from workbench.families.context import RunContext
from workbench.families.prompts import family_prompts, prompt_length, random_token_prompts, text_input_problems

if TYPE_CHECKING:
    from workbench.models.model import Model


@dataclass(frozen=True)
class TemporalFamilyConfig(TemporalConfig):
    """The analysis's `TemporalConfig` (window: TAPPA's KV path, 32; thresholds stated in
    workbench.analysis.temporal) plus the family's inputs and the budget decision."""

    n_prompts: int = 4
    n_periodic: int = 4
    n_repeated: int = 4  # random-token sequences shown twice: induction heads draw a diagonal at lag repeat-1
    repeat_len: int = 40  # must stay below max_offset so the induction lag is in the profile
    periodic_tokens: int = 128  # capped by --max-tokens; --context N sets it to N (atlas.options.CONTEXT_OPTIONS)
    #: average prefix keys kept per layer at which TAPPA's and uniform budgets are compared (the last
    #: 32 keys are always kept on top)
    budget_averages: tuple[int, ...] = (4, 8, 16, 32, 64)
    n_trials: int = 16
    #: what the family claims (`claim_rule`): heads of these classes on the text prompts ...
    claim_classes: tuple[str, ...] = ("re-access", "sequential", "seasonal")
    #: ... whose class confidence (the class's share of the head's attention) reaches this floor
    claim_min_confidence: float = 0.4
    period_copy_min_share: float = 0.5  # period-copy heads: attention at lags mP-1 on periodic text >= this


def claim_rule(cfg: TemporalFamilyConfig) -> str:
    """The temporal family's claim, in one sentence (stored in the summary, printed with the headline)."""
    return (
        f"claims the heads whose class on the text prompts is {' / '.join(cfg.claim_classes)} with confidence "
        f">= {cfg.claim_min_confidence:g} (the class's share of the head's attention); period-copy heads "
        f"(periodic text, attention at lags mP-1 >= {cfg.period_copy_min_share:g}) and induction-lag heads "
        "(random tokens shown twice, sequential at lag repeat-1) are listed beside, not claimed"
    )


def repeated_prompts(model: Model, ctx: RunContext, n: int, repeat: int) -> list[torch.Tensor]:
    """BOS + a random-token sequence of length ``repeat`` shown twice: the input that makes induction
    heads attend at lag ``repeat - 1`` (the token after the current token's earlier copy)."""
    rng = ctx.rng("temporal", "repeated")
    out = []
    for half in random_token_prompts(model, rng, n, repeat + 1):
        body = half.view(-1)[1:] if model.geometry.bos.token_id is not None else half.view(-1)
        ids = torch.cat([half.view(-1)[: half.numel() - body.numel()], body, body])
        out.append(ids.view(1, -1))
    return out


class TemporalFamily(Family):
    name = "temporal"
    config_class = TemporalFamilyConfig
    description = "how predictable each head's attention is over time, and which kind of pattern it draws"
    primary_metric = "q_sim_prune"
    evidence_metric = None

    def members(self, scores):
        """`claim_rule`: a claimed class on the text prompts, with confidence >= the floor."""
        from workbench.analysis.temporal import CLASSES

        codes = np.asarray(scores["label_code"])
        claimed = np.isin(codes, [CLASSES.index(c) for c in self.config.claim_classes])
        sure = np.asarray(scores["label_confidence"]) >= self.config.claim_min_confidence
        return [(int(l), int(h)) for l, h in zip(*np.nonzero(claimed & sure))]

    def check_inputs(self, model: Model, ctx: RunContext) -> list[InputProblem]:
        from workbench.analysis.temporal import CLASSES

        problems = text_input_problems(model, ctx, self.name)
        unknown = [c for c in self.config.claim_classes if c not in CLASSES[:3]]
        if unknown:
            problems.append(
                InputProblem(self.name, f"temporal.claim_classes {unknown} are not claimable classes", f"use {CLASSES[:3]}")
            )
        return problems

    def run_part(self, model: Model, ctx: RunContext, part: str) -> PartResult:
        from workbench.analysis.temporal import (
            analyze_temporal,
            period_channel,
            period_copy_share,
        )

        cfg = self.config
        geo = model.geometry
        tcfg = cfg  # the family config is a TemporalConfig
        ctx.seed_torch(self.name, part)
        prompts, source = family_prompts(model, ctx, self.name, default_n=cfg.n_prompts)
        report = analyze_temporal(model, prompts, tcfg)
        ctx.report("temporal: text", 1, 2)
        scores = report.scores
        classes: list[dict[str, Any]] = []
        views = [("text", report)]
        periodic_set = model_dataset("periodic", model)
        period = int(periodic_set.hints.get("period", 0)) if periodic_set is not None else 0
        if isinstance(periodic_set, GeneratedSet) and period > 0:
            length = min(cfg.periodic_tokens, prompt_length(model, ctx))
            periodic = periodic_set.make(model, ctx.rng("temporal", "periodic"), cfg.n_periodic, length)
            per_report = analyze_temporal(model, periodic, tcfg)
            scores.add("seasonal_share_periodic", per_report.scores["seasonal_share"], "seasonal share on periodic text")
            copy = np.array(
                [[period_copy_share(per_report.profiles[l, h], period) for h in range(geo.n_heads)] for l in range(geo.n_layers)]
            )
            scores.add("period_copy_share", copy, f"attention at lags mP-1 on periodic text of period P={period}")
            views.append(("periodic", per_report))
        rep_len = min(cfg.repeat_len, cfg.max_offset - 1, (prompt_length(model, ctx) - 1) // 2)
        if rep_len >= 4:
            repeated = repeated_prompts(model, ctx, cfg.n_repeated, rep_len)
            rep_report = analyze_temporal(model, repeated, tcfg)
            scores.add(
                "sequential_share_repeated",
                rep_report.scores["sequential_share"],
                f"sequential share on random tokens repeated twice (repeat {rep_len})",
            )
            views.append(("repeated", rep_report))
        ctx.report("temporal: periodic", 2, 2)
        for view, rep in views:
            for (l, h), lab in sorted(rep.labels.items()):
                chan = period_channel(rep, (l, h))
                classes.append(
                    {
                        "input": view,
                        "layer": l,
                        "head": h,
                        "label": lab.label,
                        "confidence": lab.confidence,
                        "offset": lab.offset,
                        "period": lab.period,
                        "rope_channel": None if chan is None else chan[0],
                        "rope_period": None if chan is None else chan[1],
                        "rope_share": None if chan is None else chan[2],
                    }
                )
        artefacts: dict[str, Any] = {
            "temporal_classes": classes,
            "offset_profiles": report.profiles.astype(np.float64),
            "layer_q_sim": report.layer_q_sim.astype(np.float64),
        }
        if report.rope_shares is not None and report.rope_periods is not None:
            artefacts["rope_channel_shares"] = report.rope_shares.astype(np.float64)
            artefacts["rope_periods"] = report.rope_periods.astype(np.float64)
        summary: dict[str, Any] = {
            "prompt_source": source,
            "n_prompts": len(prompts),
            "claim_rule": claim_rule(cfg),
            "claimed": {
                c: [f"L{l}H{h}" for l, h in self.members(scores) if report.labels[(l, h)].label == c] for c in cfg.claim_classes
            },
            "label_counts": {
                view: {
                    c: sum(1 for r in classes if r["input"] == view and r["label"] == c)
                    for c in ("re-access", "sequential", "seasonal", "unpredictable")
                }
                for view, _ in views
            },
        }
        if "period_copy_share" in scores.metrics:
            copy = scores["period_copy_share"]
            summary["planted_period"] = period
            summary["period_copy_heads"] = [f"L{l}H{h}" for l, h in zip(*np.nonzero(copy >= cfg.period_copy_min_share))]
            summary["period_copy"] = {
                "rule": f"attention at lags mP-1 (P = {period}) on periodic text >= {cfg.period_copy_min_share:g}",
                "heads": {f"L{l}H{h}": float(copy[l, h]) for l, h in zip(*np.nonzero(copy >= cfg.period_copy_min_share))},
            }
        if rep_len >= 4:
            summary["repeat_len"] = rep_len
            lagged = [
                r for r in classes if r["input"] == "repeated" and r["label"] == "sequential" and r["offset"] == rep_len - 1
            ]
            summary["induction_lag_heads"] = [f"L{r['layer']}H{r['head']}" for r in lagged]
            summary["induction_lag"] = {
                "rule": f"sequential at lag {rep_len - 1} (repeat - 1) on random tokens shown twice (repeat {rep_len})",
                "heads": {f"L{r['layer']}H{r['head']}": float(r["confidence"]) for r in lagged},
            }
        if isinstance(model_dataset("needles", model), GeneratedSet):  # a needle task the model can do
            from workbench.analysis.temporal import tappa_decision
            from workbench.families.retrieval import RetrievalFamilyConfig, needle_trials

            trials, _ = needle_trials(model, ctx, RetrievalFamilyConfig(n_trials=cfg.n_trials))
            decision = tappa_decision(model, trials, cfg.budget_averages)
            artefacts["budget_decision"] = decision.to_dict()
            diff = np.array(decision.diff_mean)
            summary["budget_tappa_wins"] = int((np.array(decision.diff_low) > 0).sum())
            summary["budget_uniform_wins"] = int((np.array(decision.diff_high) < 0).sum())
            summary["budget_undecided"] = int(len(diff) - summary["budget_tappa_wins"] - summary["budget_uniform_wins"])
            summary["budget_mean_gain"] = float(diff.mean())
        return PartResult(scores, artefacts, summary)
