"""ACT as ACT: the calibration's default sink set is ACT's own rule (Yu et al. 2024, its code), checked
against a slow loop written from the rule's definition, on the organism's real patterns; the workbench's
guarded rule stays available as a labelled option."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from workbench.analysis.metrics import lm_loss
from workbench.analysis.sinks import act_head_search
from workbench.errors import InputDataError
from workbench.families.sinks import SinksFamilyConfig
from workbench.interventions.attention_edits import act_calibrate, act_calibrated
from workbench.models import load_model
from workbench.models.heads import Head
from workbench.models.hooks import temporary_hooks

BETA, TAU = 0.4, 0.1
HEADS = [Head(1, 0), Head(1, 4), Head(2, 3), Head(3, 1)]


def _act_sinks_loop(a: np.ndarray, tau: float, min_query_share: float = 0.0) -> list[int]:
    """ACT's sink set of one causal map a [T, T], one key at a time: s_j = sum_i a[i, j] / (T - j) (the
    queries that see key j), keys with s_j > tau, minus the first of them (ACT's ``indices[1:]``).
    ``min_query_share`` > 0 adds the workbench's guard: T - j >= share x T."""
    t = a.shape[0]
    found = []
    for j in range(t):
        total = 0.0
        for i in range(t):
            total += a[i, j]
        if total / (t - j) > tau:
            found.append(j)
    return [j for j in found[1:] if t - j >= min_query_share * t]


def _act_calibrate_loop(a: np.ndarray, sinks: list[int], beta: float) -> np.ndarray:
    """ACT's row rule: sink entries x beta, the freed (1 - beta) x (row's sink mass) to the other keys in
    proportion to their attention (the first token included)."""
    t = a.shape[0]
    out = a.copy()
    for i in range(t):
        on = 0.0
        rest = 0.0
        for j in range(t):
            if j in sinks:
                on += a[i, j]
            else:
                rest += a[i, j]
        assert rest > 0  # softmax rows: ACT's proportional share is defined
        for j in range(t):
            out[i, j] = beta * a[i, j] if j in sinks else a[i, j] + (1 - beta) * on * a[i, j] / rest
    return out


@pytest.fixture(scope="module")
def organism():
    return load_model("organism-4l", device="cpu")


def _prompts(model, n: int = 2, length: int = 48) -> list[torch.Tensor]:
    out = []
    for seed in range(n):
        tokens = torch.randint(4, model.hf_model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))
        tokens[0, 0] = model.tokenizer.bos_token_id
        out.append(tokens)
    return out


def _reference_logits(model, tokens: torch.Tensor, heads: list[Head], min_query_share: float, sets: list | None = None):
    """Logits with each head's pattern replaced by the loop calibration of its own (unedited) pattern."""
    points = []
    for layer in sorted({h.layer for h in heads}):
        ids = [h.head for h in heads if h.layer == layer]

        def hook(pattern: torch.Tensor, hook: Any, ids: list[int] = ids, layer: int = layer) -> torch.Tensor:
            out = pattern.clone()
            for h in ids:
                a = pattern[0, h].double().numpy()
                sinks = _act_sinks_loop(a, TAU, min_query_share)
                if sets is not None:
                    sets.append(((layer, h), sinks))
                out[0, h] = torch.from_numpy(_act_calibrate_loop(a, sinks, BETA)).to(pattern.dtype)
            return out

        points.append((model.bridge.blocks[layer].attn.hook_pattern, hook))
    with temporary_hooks(points), torch.no_grad():
        return model.logits(tokens)


def test_act_calibration_defaults_to_acts_own_rule_on_real_patterns(organism):
    """On the organism's patterns ACT's rule calibrates tail keys the guarded rule drops (so the rules
    differ and the logits show it); the default calibration equals the loop of ACT's rule, and the
    labelled guarded option equals the loop with the guard."""
    differ = 0.0
    for tokens in _prompts(organism):
        act_sets: list = []
        guarded_sets: list = []
        want = _reference_logits(organism, tokens, HEADS, 0.0, act_sets)
        guarded_want = _reference_logits(organism, tokens, HEADS, 0.25, guarded_sets)
        assert any(set(a) - set(g) for (_, a), (_, g) in zip(act_sets, guarded_sets))
        with act_calibrated(organism, HEADS), torch.no_grad():
            got = organism.logits(tokens)
        with act_calibrated(organism, HEADS, sink_rule="guarded"), torch.no_grad():
            got_guarded = organism.logits(tokens)
        # float32 patterns against the float64 loop: one logit of 20k was 2.3e-5 off (tolerance 1e-4, still
        # 100x below the gap between the rules checked below)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(got_guarded, guarded_want, atol=1e-4, rtol=1e-5)
        differ = max(differ, float((want - guarded_want).abs().max()))
    assert differ > 1e-2  # the choice of rule is visible in the logits (far above the 1e-4 tolerance)


def test_act_calibrate_on_one_map_matches_the_loop():
    """A map with a real hidden sink (key 9), a spared first sink (key 0) and tail keys that only a few
    queries see, each above tau: the default is ACT's set {9, tail}, the guarded option {9}."""
    g = torch.Generator().manual_seed(3)
    t = 40
    scores = torch.randn(t, t, generator=g, dtype=torch.float64)
    scores[:, 0] += 3.0
    scores[:, 9] += 2.5
    scores[36:, 36:] += 4.0 * torch.eye(4, dtype=torch.float64)  # the last queries look at themselves
    p = torch.softmax(scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")), -1)
    a = p.numpy()
    act_set, guarded_set = _act_sinks_loop(a, TAU), _act_sinks_loop(a, TAU, 0.25)
    assert 9 in guarded_set and set(act_set) - set(guarded_set), (act_set, guarded_set)
    np.testing.assert_allclose(act_calibrate(p[None], BETA, TAU)[0].numpy(), _act_calibrate_loop(a, act_set, BETA), atol=1e-12)
    np.testing.assert_allclose(
        act_calibrate(p[None], BETA, TAU, min_query_share=0.25)[0].numpy(), _act_calibrate_loop(a, guarded_set, BETA), atol=1e-12
    )


def test_the_head_search_and_the_family_use_acts_rule_by_default(organism):
    prompts = _prompts(organism, 1, 40)
    heads = HEADS[:2]
    base = lm_loss(organism, prompts)
    result = act_head_search(organism, lambda: -lm_loss(organism, prompts), lambda: 0.0, candidates=heads)
    assert result.sink_rule == "act"
    for head in heads:
        want = _reference_logits(organism, prompts[0], [head], 0.0)[0, :-1].float()
        loss = float(torch.nn.functional.cross_entropy(want, prompts[0][0, 1:]))
        assert result.single_head_gain[head] == pytest.approx(base - loss, abs=1e-5)
    guarded = act_head_search(organism, lambda: -lm_loss(organism, prompts), lambda: 0.0, candidates=heads, sink_rule="guarded")
    assert guarded.sink_rule == "guarded" and guarded.single_head_gain != result.single_head_gain
    assert SinksFamilyConfig().act_sink_rule == "act"
    with pytest.raises(InputDataError, match="unknown ACT sink rule"):
        act_head_search(organism, lambda: 0.0, lambda: 0.0, candidates=heads, sink_rule="loose")
