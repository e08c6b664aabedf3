"""The verdict statistics (`workbench.analysis.verdicts`) against direct computations."""

from __future__ import annotations

import math
import random

import pytest

from workbench.analysis.verdicts import (
    VerdictConfig,
    binomial_sf,
    bonferroni,
    correct,
    draw_controls,
    holm,
    mcnemar_exact,
    per_trial_test,
    permutation_p,
    permutation_test,
    retrieval_refusal,
    safety_refusal,
)
from workbench.models.heads import Head


def _sf_direct(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@pytest.mark.parametrize(("k", "n", "p"), [(0, 5, 0.3), (3, 10, 0.2), (16, 16, 0.13), (7, 40, 0.05), (41, 40, 0.5)])
def test_binomial_tail_is_exact(k, n, p):
    assert binomial_sf(k, n, p) == pytest.approx(_sf_direct(k, n, p), rel=1e-9, abs=1e-300)


def test_mcnemar_and_permutation_p():
    assert mcnemar_exact(16, 0) == pytest.approx(0.5**16)
    assert mcnemar_exact(1, 1) == pytest.approx(0.75)  # P(Bin(2, 1/2) >= 1)
    assert mcnemar_exact(0, 0) == 1.0
    assert permutation_p(1.0, [0.0, 0.2, 1.0]) == pytest.approx(2 / 4)
    assert permutation_p(1.0, [0.0] * 19) == pytest.approx(1 / 20)


def test_holm_and_bonferroni_against_hand_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, 1*0.04, then running max
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert bonferroni(p) == pytest.approx([0.04, 0.16, 0.12, 0.02])


def test_the_issue_case_one_flip_of_four_against_one_draw_is_not_confirmed():
    """Issue 26: 0.75 -> 1 with a random control of 0.75 (one request of 4 flipped, one draw)."""
    base = [True, False, False, False]  # ASR 0.75: only request 0 is refused at baseline
    head = [False, False, False, False]  # ASR 1.0
    control = [[True, False, False, False]]
    (t,) = correct([per_trial_test("L0H1", base, head, control)])
    assert t.n == 1 and t.flips == 1 and t.effect == pytest.approx(0.25)
    assert t.p_value >= 0.5 and not t.confirmed  # McNemar alone: P(Bin(1, 1/2) >= 1) = 0.5


def test_a_planted_head_is_confirmed_and_a_head_like_the_controls_is_not():
    rng = random.Random(0)
    base = [True] * 16
    planted = [False] * 16  # breaks every trial
    controls = [[rng.random() > 0.05 for _ in range(16)] for _ in range(8)]  # random heads break ~5%
    ordinary = controls[0]
    tests = correct([per_trial_test("L2H7", base, planted, controls[1:]), per_trial_test("L2H3", base, ordinary, controls[1:])])
    planted_t, ordinary_t = tests
    assert planted_t.confirmed and planted_t.p_corrected is not None and planted_t.p_corrected < 1e-4
    assert planted_t.control_mean is not None and planted_t.control_sd is not None and planted_t.n_controls == 7
    # the binomial against the smoothed pooled rate, and McNemar vs the baseline: the larger is p
    flips = sum(not c[i] for c in controls[1:] for i in range(16))
    rate = (flips + 1) / (16 * 7 + 2)
    assert planted_t.control_rate == pytest.approx(rate)
    assert planted_t.p_value == pytest.approx(max(_sf_direct(16, 16, rate), 0.5**16))
    assert not ordinary_t.confirmed


def test_controls_that_break_as_much_as_the_head_block_the_verdict():
    base = [True] * 16
    head = [False] * 8 + [True] * 8
    controls = [[False] * 8 + [True] * 8 for _ in range(4)]  # every random head breaks the same half
    (t,) = correct([per_trial_test("L1H0", base, head, controls)])
    assert t.effect == pytest.approx(0.5) and not t.confirmed and "p " in t.reason


def test_the_floor_blocks_a_significant_but_small_effect():
    base = [True] * 400
    head = [False] * 40 + [True] * 360  # 0.1 < the 0.125 floor, yet far from controls that never fail
    (t,) = correct([per_trial_test("L0H0", base, head, [[True] * 400] * 8)])
    assert t.p_corrected is not None and t.p_corrected < 1e-6 and not t.confirmed and "floor" in t.reason


def test_permutation_test_needs_enough_draws():
    few = correct([permutation_test("L0H0", 0.5, [0.0], n=8, floor=0.01)])[0]
    assert few.p_value == pytest.approx(0.5) and not few.confirmed and "smallest p" in few.reason
    many = correct([permutation_test("L0H0", 0.5, [0.0] * 39, n=8, floor=0.01)])[0]
    assert many.p_value == pytest.approx(1 / 40) and many.confirmed


def test_refusals_follow_the_stated_baselines():
    assert safety_refusal(0.75) and "75%" in safety_refusal(0.75)  # type: ignore[operator]
    assert safety_refusal(0.5) and safety_refusal(0.45) is None and safety_refusal(None) is None
    assert retrieval_refusal(0.0) and retrieval_refusal(0.5) is None
    assert safety_refusal(0.3, cfg=VerdictConfig(max_base_asr=0.25))
    # a model that babbles (ASR low, few refusals) has no refusal either; one that refuses may claim
    assert "refuses only 0%" in (safety_refusal(0.3, 0.0) or "") and safety_refusal(0.0, 1.0) is None


def test_control_draws_are_distinct_and_respect_exclusions_and_layers():
    heads = [Head(l, h) for l in range(3) for h in range(4)]
    drawn = draw_controls(heads, 5, random.Random(1), exclude=[Head(0, 0)])
    assert len(set(drawn)) == 5 and Head(0, 0) not in drawn
    same = draw_controls(heads, 10, random.Random(1), same_layer_as=Head(2, 1), exclude=[Head(2, 1)])
    assert sorted(same) == [Head(2, 0), Head(2, 2), Head(2, 3)]
