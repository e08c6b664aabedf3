"""Batched needle checks (`needle_outcomes_many`: one condition per batch row) give exactly the booleans
of the one-condition-at-a-time loop they replace, on GQA and non-GQA tiny models, with uniform head
ablation and KV-budget streaming (per-row kernel edits), chunked to the batch limits."""

from __future__ import annotations

import pytest
import torch

from workbench.analysis.retrieval import (
    NeedleCondition,
    ablation_condition,
    budget_condition,
    kv_budget_curve,
    needle_outcomes,
    needle_outcomes_many,
    top_vs_random_ablation,
)
from workbench.analysis.sinks import BatchLimits
from workbench.data.needles import NeedleTrial
from workbench.interventions.ablation import ablate_heads
from workbench.interventions.kv_budget import kv_budget_by_kv_heads, streaming_heads
from workbench.models.generate import greedy_generate
from workbench.record import record_attention


def slow_outcomes(model, trials, condition: NeedleCondition) -> list[bool]:
    """The loop the batched sweep replaces: one condition, one pass per trial."""
    with ablate_heads(model, sorted(condition.ablated), "uniform"), streaming_heads(model, condition.windows):
        return needle_outcomes(model, trials)


def own_trials(model, n: int = 5, length: int = 40, new: int = 3, seed: int = 0) -> list[NeedleTrial]:
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


def conditions_of(model) -> list[NeedleCondition]:
    geo = model.geometry
    heads = geo.all_heads()
    conds = [NeedleCondition()]
    conds += [ablation_condition(model, [h]) for h in heads]
    conds += [ablation_condition(model, heads[::2]), ablation_condition(model, heads[1::3])]
    all_kv = [(layer, kv) for layer in range(geo.n_layers) for kv in range(geo.n_kv_heads)]
    conds += [budget_condition(model, all_kv[:n], sink=2, recent=6) for n in range(len(all_kv))]
    conds += [budget_condition(model, all_kv[1::2], sink=1, recent=3)]
    conds.append(NeedleCondition(ablated=frozenset(heads[:1]), streamed=budget_condition(model, [], 2, 5).streamed))
    return conds


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen3"])
def test_batched_outcomes_are_the_one_condition_loop(tiny_model_dir, arch):
    from workbench.models import load_model

    model = load_model(tiny_model_dir(arch), device="cpu")
    trials = own_trials(model)
    conds = conditions_of(model)
    slow = [slow_outcomes(model, trials, c) for c in conds]
    flat = [o for per in slow for o in per]
    assert True in flat and False in flat  # the comparison could tell a wrong row apart
    assert len({tuple(o) for o in slow}) > 1  # some conditions flip some trials
    for rows in (3, 8):
        assert needle_outcomes_many(model, trials, conds, limits=BatchLimits(rows=rows)) == slow
    # a token budget of two rows of this length
    assert needle_outcomes_many(model, trials, conds, limits=BatchLimits(rows=8, tokens=2 * 42)) == slow


def test_duplicate_conditions_run_once_and_heads_are_conditions(tiny_llama):
    model = tiny_llama
    trials = own_trials(model, n=2)
    record_attention(model, torch.randint(4, 60, (1, 8)))  # the core's self-check runs (and is cached) first
    seen = []
    handle = model.bridge.register_forward_pre_hook(lambda m, a, k: seen.append(a[0].shape[0] if a else None), with_kwargs=True)
    try:
        out = needle_outcomes_many(model, trials, [[], ["L0H1"], NeedleCondition(), "L0H1", ["L1H2"]], limits=BatchLimits(rows=8))
    finally:
        handle.remove()
    assert seen == [3, 3]  # three distinct conditions, one pass per trial
    assert out[0] == out[2] and out[1] == out[3]
    assert out[0] == needle_outcomes(model, trials)


def test_comparison_and_budget_curve_are_the_slow_loops(tiny_llama):
    """`top_vs_random_ablation` and `kv_budget_curve`, batched, against their former loops."""
    import random

    import numpy as np

    from workbench.interventions.kv_budget import cache_fraction

    model = tiny_llama
    geo = model.geometry
    trials = own_trials(model, n=4, seed=1)
    ranking = geo.all_heads()[::-1]
    cmp = top_vs_random_ablation(model, trials, ranking, 3, n_random=3, seed=5, limits=BatchLimits(rows=3))
    acc = lambda: sum(needle_outcomes(model, trials)) / len(trials)
    base = acc()
    top = ranking[:3]
    with ablate_heads(model, top, "uniform"):
        top_acc = acc()
    rng = random.Random(5)
    others = [h for h in geo.all_heads() if h not in set(top)]
    sets, accs = [], []
    for _ in range(3):
        chosen = rng.sample(others, 3)
        with ablate_heads(model, chosen, "uniform"):
            accs.append(acc())
        sets.append(chosen)
    assert (cmp.base_accuracy, cmp.top_heads, cmp.top_accuracy, cmp.random_heads, cmp.random_accuracies) == (
        base,
        top,
        top_acc,
        sets,
        accs,
    )

    kv_ranking = [(1, 1), (0, 0), (1, 0), (0, 1)]
    fractions = [0.25, 0.5, 0.75]
    curve = kv_budget_curve(
        model, trials, kv_ranking, fractions, sink=2, recent=5, seed=3, n_random=2, limits=BatchLimits(rows=4)
    )
    all_kv = [(layer, kv) for layer in range(geo.n_layers) for kv in range(geo.n_kv_heads)]
    rng = random.Random(3)
    ranked_acc, random_acc, shares = [], [], []
    for frac in fractions:
        n_full = int(round(frac * len(all_kv)))
        with kv_budget_by_kv_heads(model, kv_ranking[:n_full], sink=2, recent=5):
            ranked_acc.append(acc())
        draws = []
        for _ in range(2):
            with kv_budget_by_kv_heads(model, rng.sample(all_kv, n_full), sink=2, recent=5):
                draws.append(acc())
        random_acc.append(float(np.mean(draws)))
        shares.append(cache_fraction(40, n_full, len(all_kv), 2, 5))
    assert curve.ranked_accuracy == ranked_acc and curve.random_accuracy == random_acc
    assert curve.full_accuracy == base and curve.cache_share == shares and curve.fractions == fractions
    assert len(set(ranked_acc + random_acc + [base])) > 1  # the budgets change some outcomes
