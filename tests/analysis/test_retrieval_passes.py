"""The retrieval family's passes on a tiny model, counted on the bridge's forward, against the formula,
and its causal-check artefacts against the one-condition-at-a-time loops the batched sweep replaced.

With T trials (G answer tokens each), k evidence heads, c controls, compare_k / n_random, B budget
fractions (each: the ranked set and 2 random draws), R = `BatchLimits.rows_for` rows per pass:

* retrieval score: T cached decodes (T prefills, T·(G - 1) steps); echo/induction + detectors: 2;
* causal checks: sum_t ceil(U / R_t) passes, U the distinct conditions,
  U <= 1 + min(k + c, L·H) + (1 + n_random) + B·(1 + 2) (base once; a control also tested, or two
  equal draws, run once).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import random

import numpy as np
import torch

from workbench.analysis import retrieval as retrieval_mod
from workbench.analysis.retrieval import needle_outcomes
from workbench.analysis.verdicts import draw_controls
from workbench.data.needles import NeedleTrial
from workbench.families import RunContext
from workbench.families import retrieval as family_mod
from workbench.families.retrieval import (
    NeedleSetup,
    RetrievalFamily,
    RetrievalFamilyConfig,
    check_conditions,
    ranked_heads,
)
from workbench.interventions.ablation import ablate_heads
from workbench.interventions.kv_budget import cache_fraction, kv_budget_by_kv_heads, kv_head_ranking
from workbench.models.generate import greedy_generate
from workbench.record import record_attention

T, G, R = 4, 3, 4


def own_trials(model, n: int, new: int, seed: int, length: int = 40) -> list[NeedleTrial]:
    """Trials whose answer is the model's own greedy continuation (every third with its last token
    changed), so ablations and budgets flip some outcomes."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.geometry.vocab_size
    trials = []
    for i in range(n):
        prompt = torch.randint(4, vocab, (length,), generator=g)
        answer = greedy_generate(model, prompt.view(1, -1), new, cache=False)[0].cpu().clone()
        if i % 3 == 2:
            answer[-1] = (answer[-1] + 1) % vocab
        trials.append(NeedleTrial(prompt, answer, (5, 5 + new), length, 0.5, {}))
    return trials


def test_retrieval_family_passes_are_the_formula_and_checks_the_slow_loops(tiny_llama, monkeypatch):
    model = tiny_llama
    geo = model.geometry
    trials = own_trials(model, n=T, new=G, seed=2)
    monkeypatch.setattr(family_mod, "needle_setup", lambda m, c, cfg: NeedleSetup(trials, "own", 40))
    cfg = RetrievalFamilyConfig(sink=2, recent=6, budget_fractions=(0.25, 0.5, 0.75), check_batch=R, segment=16)
    ctx = RunContext(n_prompts=T, max_tokens=64)
    conditions: list = []
    batched = retrieval_mod.needle_outcomes_many

    def spy(model, trials, conds, *args, **kwargs):
        conditions.extend(retrieval_mod._as_condition(model, c) for c in conds)
        return batched(model, trials, conds, *args, **kwargs)

    monkeypatch.setattr(retrieval_mod, "needle_outcomes_many", spy)
    record_attention(model, torch.randint(4, 60, (1, 8)))  # the core's self-check runs (and is cached) first
    counts: collections.Counter = collections.Counter()

    def pre(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        if cache is None:
            counts["pass"] += 1
        else:
            counts["step" if cache.get_seq_length() > 0 else "prefill"] += 1

    handle = model.bridge.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        result = RetrievalFamily(cfg).run_part(model, ctx, "all")
    finally:
        handle.remove()

    u = len(set(conditions))
    k, c, b, lh = cfg.evidence_heads, cfg.n_controls, len(cfg.budget_fractions), geo.n_total_heads
    assert u <= 1 + min(k + c, lh) + (1 + cfg.n_random) + b * (1 + 2)
    bound = check_conditions(cfg, lh, geo.n_layers * geo.n_kv_heads)
    assert u <= bound  # random draws of 1 or 3 of 4 KV heads often coincide here
    # the defaults on this model (8 heads, 4 KV heads: budgets keep 0, 0, 1, 2 KV heads)
    assert check_conditions(RetrievalFamilyConfig(), 8, 4) == 1 + 8 + 4 + (1 + 3 + 3)
    assert u > R  # more than one pass per trial
    assert counts == {"prefill": T, "step": T * (G - 1), "pass": 2 + T * math.ceil(u / R)}, counts
    before = T * (1 + k + c + (2 + cfg.n_random) + (1 + b * 3))  # the per-condition loop this replaces
    assert T * math.ceil(u / R) * 3 < before

    # -- the same artefacts as the one-condition-at-a-time loops -------------------------------------
    def acc():
        return sum(needle_outcomes(model, trials)) / len(trials)

    metric = result.summary["ranking_metric"]
    ranking = ranked_heads(result.scores, metric)
    base = needle_outcomes(model, trials)
    outcomes = {}
    tested = ranking[: min(k, lh)]
    controls = draw_controls(geo.all_heads(), c, random.Random(int(ctx.rng("retrieval", "controls").integers(2**31))))
    for head in [*tested, *controls]:
        with ablate_heads(model, [head], mode="uniform"):
            outcomes[head] = needle_outcomes(model, trials)
    checks = result.artefacts["head_checks"]
    assert checks["base"] == base
    assert checks["heads"] == {str(h): outcomes[h] for h in tested}
    assert checks["controls"] == {str(h): outcomes[h] for h in controls}
    drop = np.full((geo.n_layers, geo.n_heads), np.nan)
    for h in tested:
        drop[h.layer, h.head] = float(np.mean(base)) - float(np.mean(outcomes[h]))
    np.testing.assert_array_equal(result.scores["ablation_accuracy_drop"], drop)
    flat = [o for per in [base, *outcomes.values()] for o in per]
    assert True in flat and False in flat  # outcomes vary, so a wrong row or condition would show

    ck = min(cfg.compare_k, lh // 2)
    top = list(ranking[:ck])
    with ablate_heads(model, top, mode="uniform"):
        top_acc = acc()
    rng = random.Random(int(ctx.rng("retrieval", "random").integers(2**31)))
    others = [h for h in geo.all_heads() if h not in set(top)]
    sets, accs = [], []
    for _ in range(cfg.n_random):
        chosen = rng.sample(others, ck)
        with ablate_heads(model, chosen, mode="uniform"):
            accs.append(acc())
        sets.append(chosen)
    assert result.artefacts["ablation_comparison"] == {
        "metric": metric,
        "k": ck,
        "mode": "uniform",
        "base_accuracy": acc(),
        "top_heads": [str(h) for h in top],
        "top_accuracy": top_acc,
        "random_heads": [[str(h) for h in s] for s in sets],
        "random_accuracies": accs,
    }

    kv_ranking = kv_head_ranking(result.scores[metric], geo, cfg.kv_reduce)
    all_kv = [(layer, kv) for layer in range(geo.n_layers) for kv in range(geo.n_kv_heads)]
    rng = random.Random(int(ctx.rng("retrieval", "budget").integers(2**31)))
    ranked_acc, random_acc, shares = [], [], []
    for frac in cfg.budget_fractions:
        n_full = int(round(frac * len(all_kv)))
        with kv_budget_by_kv_heads(model, list(kv_ranking[:n_full]), sink=cfg.sink, recent=cfg.recent):
            ranked_acc.append(acc())
        draws = []
        for _ in range(2):
            with kv_budget_by_kv_heads(model, rng.sample(all_kv, n_full), sink=cfg.sink, recent=cfg.recent):
                draws.append(acc())
        random_acc.append(float(np.mean(draws)))
        shares.append(cache_fraction(40, n_full, len(all_kv), cfg.sink, cfg.recent))
    curve = result.artefacts["kv_budget_curve"]
    assert (curve["ranked_accuracy"], curve["random_accuracy"], curve["full_accuracy"], curve["cache_share"]) == (
        ranked_acc,
        random_acc,
        acc(),
        shares,
    )
    assert curve["fractions"] == list(cfg.budget_fractions)
    assert dataclasses.asdict(cfg)["check_batch"] == R
