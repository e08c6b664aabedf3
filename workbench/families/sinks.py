"""The ``sinks`` family: first-token and hidden sink heads, with a causal check.

Scores come from `workbench.analysis.sinks` (Gu et al. 2024 sink rate, ACT hidden sinks).
Evidence: for the strongest first-token heads one at a time, and for the top-k against the
bottom-k heads as a group, the change in LM loss when the head(s) can no longer attend to
their sink tokens or the first token (`workbench.analysis.sinks.sink_evidence`): kernel-side key
removal under the instrumented core, the variants of one prompt batched one per row. Prompts: the user's prompt file, the model's own text
set (the organisms' filler), otherwise windows of the shipped prose (`workbench.families.prompts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.analysis.scores import HeadScores
from workbench.analysis.sinks import SinkConfig
from workbench.families.base import Artefact, Family, FamilyResult, InputProblem, PartResult
from workbench.families.context import RunContext
from workbench.families.prompts import family_prompts, text_input_problems

if TYPE_CHECKING:
    from workbench.analysis.metrics import Targets
    from workbench.data.needles import NeedleTrial
    from workbench.models.model import Model

MAX_SINK_TOKEN_ROWS = 20000


@dataclass(frozen=True)
class SinksFamilyConfig(SinkConfig):
    """The analysis's `SinkConfig` (eps: Gu et al. 2024; tau: ACT; min_query_share: ours) plus the
    family's evidence and ACT search: beta and the calibrated layers from ACT (Yu et al. 2024, its
    code: layers 2 to L-2); evidence: sink and first-token removal."""

    evidence_heads: int = 4  # strongest first-token heads checked one at a time (-1: every head)
    check_k: int = 3  # top-k vs bottom-k group check
    act: bool = True  # run ACT's head search (a separate, resumable part)
    act_beta: float = 0.4  # ACT (Yu et al. 2024)
    # keys the calibration scales: "act" = ACT's own rule (mean received > tau, its first detected sink
    # spared), as its code; "guarded" = the reported hidden sinks (also seen by >= min_query_share)
    act_sink_rule: str = "act"
    act_skip_first_layers: int = 2  # ACT's code calibrates layers 2..30 of 32: never the first two ...
    act_skip_last_layers: int = 1  # ... nor the last
    act_trials: int = 16  # calibration and evaluation sets (kept apart) when the model has its own needle set
    # tokens per ACT calibration/evaluation sequence (needle context, or LM-loss prompt length), within the
    # run's --max-tokens (0: --max-tokens itself). The search costs about ceil(tried heads / rows) passes per
    # calibration sequence, so it stays at a short length when the atlas runs at long context
    act_context: int = 256
    # edited variants of one prompt (a head or a head group per variant) scored in one forward, one per
    # batch row: at most check_batch rows and check_batch_tokens tokens per pass (removal checks and ACT)
    check_batch: int = 8
    check_batch_tokens: int = 16384


def _needle_targets(trial: NeedleTrial) -> Targets:
    """A needle trial teacher-forced: the prompt and the answer but its last token fed, the answer scored
    (what `workbench.analysis.retrieval.answer_logprob` measures)."""
    import torch

    from workbench.analysis.metrics import Targets

    tokens = torch.cat([trial.prompt.reshape(-1), trial.answer.reshape(-1)[:-1]]).cpu()
    start = trial.prompt.numel() - 1
    return Targets(tokens, torch.arange(start, start + trial.answer.numel()), trial.answer.reshape(-1).cpu())


class SinksFamily(Family):
    name = "sinks"
    config_class = SinksFamilyConfig
    description = "heads that park attention on the first token or on hidden sink tokens"
    primary_metric = "first_token_mass"
    evidence_metric = "removal_loss_delta"

    def members(self, scores: HeadScores) -> list[tuple[int, int]]:
        """Sink heads: alpha_1 > eps in most prompts (Gu et al.), or at least eps of all their
        attention on sink tokens (first or hidden)."""
        first = scores["sink_head"] > 0.5
        share = scores["sink_attention_share"] > self.config.eps if "sink_attention_share" in scores.metrics else first
        return [(int(l), int(h)) for l, h in zip(*np.nonzero(first | share))]

    def parts(self, model: Model, ctx: RunContext) -> list[str]:
        return ["all", "act"] if self.config.act else ["all"]

    def merge(self, parts: dict[str, PartResult]) -> FamilyResult:
        """The parts write distinct artefacts and summary keys: keep their plain names."""
        merged = super().merge(parts)
        merged.artefacts = {k: v for res in parts.values() for k, v in res.artefacts.items()}
        merged.summary = {k: v for res in parts.values() for k, v in res.summary.items()}
        return merged

    def run_act(self, model: Model, ctx: RunContext) -> PartResult:
        """ACT calibration: single-head search on a calibration set, then the kept heads on a
        held-out set. A model with its own needle set (the organisms) is scored by needle answer
        log-probability; other models by the negative LM loss on two disjoint halves of the prompts."""
        from dataclasses import replace

        from workbench.analysis.metrics import Targets
        from workbench.analysis.sinks import BatchLimits, act_head_search
        from workbench.data.registry import GeneratedSet, model_dataset

        cfg = self.config
        geo = model.geometry
        context = self.act_length(ctx)
        needles = model_dataset("needles", model)
        if isinstance(needles, GeneratedSet):
            cal_rng, eval_rng = ctx.rng("sinks", "act-cal"), ctx.rng("sinks", "act-eval")
            needle_context = max(64, context)
            cal = [_needle_targets(t) for t in needles.make(model, cal_rng, cfg.act_trials, needle_context)]
            held = [_needle_targets(t) for t in needles.make(model, eval_rng, cfg.act_trials, needle_context)]
            metric_name = "needle answer log-probability"
        else:
            prompts, _ = family_prompts(model, replace(ctx, max_tokens=context), "sinks-act", default_n=8)
            half = max(1, len(prompts) // 2)
            cal_p, held_p = prompts[:half], prompts[half:] or prompts[:half]
            metric_name = "negative LM loss"
            cal, held = [Targets.next_tokens(p) for p in cal_p], [Targets.next_tokens(p) for p in held_p]
        result = act_head_search(
            model,
            cal,
            held,
            beta=cfg.act_beta,
            tau=cfg.tau,
            skip_first_layers=cfg.act_skip_first_layers,
            skip_last_layers=cfg.act_skip_last_layers,
            min_query_share=cfg.min_query_share,
            progress=lambda i, n: ctx.report("sinks: ACT head search", i, n),
            sink_rule=cfg.act_sink_rule,
            limits=BatchLimits(cfg.check_batch, cfg.check_batch_tokens),
        )
        gain = np.full((geo.n_layers, geo.n_heads), np.nan)
        for head, g in result.single_head_gain.items():
            gain[head.layer, head.head] = g
        scores = HeadScores(self.name, geo.n_layers, geo.n_heads)
        scores.add("act_calibration_gain", gain, f"change in {metric_name} on the calibration set when ACT calibrates this head")
        act = {
            "metric": metric_name,
            "beta": result.beta,
            "tau": result.tau,
            "sink_rule": result.sink_rule,
            "sink_rule_text": (
                f"ACT's own: mean received attention > tau ({result.tau:g}), its first detected sink spared"
                if result.sink_rule == "act"
                else f"guarded: mean received attention > tau ({result.tau:g}) and seen by >= "
                f"{cfg.min_query_share:g} of the queries, the first detected sink spared"
            ),
            "selected": [str(h) for h in result.selected],
            "calibration_before": result.calibration_before,
            "calibration_after": result.calibration_after,
            "evaluation_before": result.evaluation_before,
            "evaluation_after": result.evaluation_after,
            "context": sorted({int(t.tokens.numel()) for t in cal}),
            "tried": [str(h) for h in result.candidates if h not in result.skipped],
            "skipped": [{"head": str(h), "reason": why} for h, why in result.skipped.items()],
            "passes": result.passes,
        }
        return PartResult(scores, {"act_calibration": act}, {"act": act})

    def act_length(self, ctx: RunContext) -> int:
        """ACT's calibration length: ``act_context`` tokens within the run's --max-tokens (0: --max-tokens)."""
        n = int(self.config.act_context)
        return ctx.max_tokens if n <= 0 else min(n, ctx.max_tokens)

    def check_inputs(self, model: Model, ctx: RunContext) -> list[InputProblem]:
        from workbench.interventions.attention_edits import ACT_SINK_RULES

        problems = text_input_problems(model, ctx, self.name)
        if self.config.act and self.config.act_sink_rule not in ACT_SINK_RULES:
            problems.append(
                InputProblem(
                    self.name,
                    f"unknown ACT sink rule {self.config.act_sink_rule!r}",
                    f"--set sinks.act_sink_rule= one of {', '.join(ACT_SINK_RULES)}",
                )
            )
        return problems

    def run_part(self, model: Model, ctx: RunContext, part: str) -> PartResult:
        if part == "act":
            ctx.seed_torch(self.name, part)
            return self.run_act(model, ctx)
        from workbench.analysis.sinks import BatchLimits, analyze_sinks, sink_evidence

        cfg = self.config
        sink_cfg = cfg  # the family config is a SinkConfig
        ctx.seed_torch(self.name, part)
        prompts, source = family_prompts(model, ctx, self.name)
        report = analyze_sinks(model, prompts, sink_cfg, progress=lambda i, n: ctx.report("sinks: recording", i, n))
        scores = report.scores
        geo = model.geometry
        n_heads_total = geo.n_layers * geo.n_heads

        # Evidence: loss change when only this head loses its sink tokens, and the top-k vs bottom-k
        # group checks, as edited variants of each prompt sharing batched passes (one variant per row)
        ranked = [h for h, _ in scores.ranked("first_token_mass")]
        k = n_heads_total if cfg.evidence_heads < 0 else min(cfg.evidence_heads, n_heads_total)
        check_k = max(1, min(cfg.check_k, n_heads_total // 2))
        evidence = sink_evidence(
            model,
            report,
            prompts,
            ranked[:k],
            check_k,
            BatchLimits(cfg.check_batch, cfg.check_batch_tokens),
            progress=lambda i, n: ctx.report("sinks: removal checks", i, n),
        )
        base = evidence.base_loss
        delta = np.full((geo.n_layers, geo.n_heads), np.nan)
        for head, loss in evidence.head_loss.items():
            delta[head.layer, head.head] = loss - base
        scores.add("removal_loss_delta", delta, "LM loss change when this head cannot attend to its sink tokens (first + hidden)")
        check, first = evidence.sink_check, evidence.first_token_check

        tokens = [
            {
                "prompt": t.prompt,
                "layer": t.layer,
                "head": t.head,
                "position": t.position,
                "token": t.token,
                "mean_received": t.mean_received,
                "kind": t.kind,
            }
            for t in report.sink_tokens
        ]
        frequency: list[dict[str, Any]] = sorted(
            (
                {"token": tok, "times_sink": s, "times_seen": n, "rate": s / n if n else 0.0}
                for tok, (s, n) in report.token_sink_frequency.items()
            ),
            key=lambda r: (-r["times_sink"], -r["rate"], r["token"]),
        )
        frequency = [r for r in frequency if r["times_sink"] > 0]
        hidden = [t for t in tokens if t["kind"] == "hidden"]
        artefacts: dict[str, Artefact] = {
            "sink_rate_per_layer": np.asarray(report.sink_rate_per_layer, dtype=np.float64),
            "sink_tokens": tokens[:MAX_SINK_TOKEN_ROWS],
            "token_sink_frequency": frequency,
            "removal_check": {
                "base_loss": check.base_loss,
                "top_heads": [str(h) for h in check.top_heads],
                "bottom_heads": [str(h) for h in check.bottom_heads],
                "top_loss": check.top_loss,
                "bottom_loss": check.bottom_loss,
                "top_delta": check.top_delta,
                "bottom_delta": check.bottom_delta,
                "ranked_by": "sink_attention_share",
            },
            "first_token_removal_check": {
                "top_heads": [str(h) for h in first.top_heads],
                "bottom_heads": [str(h) for h in first.bottom_heads],
                "top_delta": first.top_delta,
                "bottom_delta": first.bottom_delta,
                "ranked_by": "first_token_mass",
            },
        }
        summary = {
            "prompt_source": source,
            "n_prompts": len(prompts),
            "prompt_tokens": [int(p.shape[-1]) for p in prompts],
            "sink_rate_percent": report.sink_rate,
            "n_sink_heads": len(self.members(scores)),
            "n_hidden_sink_tokens": len(hidden),
            "sink_token_rows_truncated": len(tokens) > MAX_SINK_TOKEN_ROWS,
            "base_loss": base,
            "top_removal_delta": check.top_delta,
            "bottom_removal_delta": check.bottom_delta,
            "config": {"eps": cfg.eps, "first_k": cfg.first_k, "tau": cfg.tau, "min_query_share": cfg.min_query_share},
        }
        return PartResult(scores, artefacts, summary)
