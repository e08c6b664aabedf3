"""The analysis families on the shipped organism, checked against what was planted and against its
ground-truth table (workbench/organisms/shipped/organism-4l/ground_truth.json).

These are the acceptance measurements of the sink and retrieval families at the atlas defaults
(`workbench atlas organism-4l -f sinks,retrieval`); each assertion is a causal check that could fail.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.families.context import RunContext
from workbench.families.registry import build_family
from workbench.models import load_model
from workbench.models.registry import shipped_models

NAME = "organism-4l"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def organism():
    return load_model(NAME, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def truth() -> dict:
    return json.loads((shipped_models()[NAME] / "ground_truth.json").read_text())


def _run(model, family: str, part: str = "all"):
    return build_family(family).run_part(model, RunContext(), part)


@pytest.fixture(scope="module")
def retrieval(organism):
    return _run(organism, "retrieval")


def test_top_retrieval_heads_break_the_needle_and_random_heads_do_not(retrieval):
    s = retrieval.summary
    assert s["needle_accuracy"] >= 0.9
    # Ablating the top-3 retrieval heads: accuracy near zero; 3 random triples keep most of it.
    assert s["top_k_ablation_accuracy"] <= 0.2
    assert s["random_k_ablation_accuracy"] - s["top_k_ablation_accuracy"] >= 0.4


def test_the_ground_truth_copy_head_is_a_top_retrieval_head(retrieval, truth):
    """The head whose single ablation hurts both needle and induction most in the ground truth (the
    copy head of layer 2) has a top retrieval score; the layer-0/1 needle heads (key matching and
    previous-token steps) need not, since the retrieval score only sees copying attention."""
    heads = truth["modes"]["mean"]["heads"]
    layer2 = {h: v for h, v in heads.items() if h.startswith("L2")}
    copy_head = min(layer2, key=lambda h: layer2[h]["needle-512"] + layer2[h]["induction"])
    scores = retrieval.scores["retrieval_score"]
    layer, head = (int(x) for x in copy_head[1:].split("H"))
    assert scores[layer, head] >= np.sort(scores.ravel())[-4]  # within the top 4 (ties at 1.0 are common)


def test_kv_budget_top_heads_keep_accuracy_where_random_heads_lose_it(retrieval):
    curve = retrieval.artefacts["kv_budget_curve"]
    full = curve["full_accuracy"]
    ok = [i for i, acc in enumerate(curve["ranked_accuracy"]) if acc >= full - 0.05]
    assert ok, curve
    i = ok[0]  # the smallest budget at which the ranked heads stay within 5 points of full attention
    assert curve["random_accuracy"][i] <= full - 0.3, curve


def test_the_organisms_sinks_are_hidden_and_carry_little(organism):
    """The organism has no first-token sink heads (no head puts eps = 0.3 of its attention on BOS) but
    hundreds of hidden sink tokens; removing each head's own sink tokens moves the loss by under 0.5%
    of its value, for the top-3 and the bottom-3 heads by sink share alike (after the safety-head
    planting phase; before it the top-3 moved it by +0.0126). The causal check is demonstrated where a
    sink is planted: tests/analysis/test_sinks.py."""
    res = _run(organism, "sinks", "all")
    s = res.summary
    assert s["n_hidden_sink_tokens"] > 0
    assert s["sink_rate_percent"] == 0.0
    assert np.nanmax(res.scores["first_token_mass"]) < s["config"]["eps"]
    assert abs(s["top_removal_delta"]) < 0.005 * s["base_loss"]
    assert abs(s["bottom_removal_delta"]) < 0.005 * s["base_loss"]


def test_temporal_labels_match_the_planted_and_retrieval_heads(organism, retrieval):
    res = _run(organism, "temporal")
    s = res.summary
    # The planted period: heads that copy from whole periods back on periodic text (lags mP - 1).
    assert s["planted_period"] == 7 and len(s["period_copy_heads"]) >= 1
    # The retrieval family's induction heads draw the induction diagonal (lag repeat - 1) on repeated text.
    ind = retrieval.scores["tl_induction_score"]
    top_induction = [f"L{l}H{h}" for l, h in zip(*np.nonzero(ind >= 0.2))]
    assert top_induction and set(top_induction) <= set(s["induction_lag_heads"])
    # Its previous-token heads are sequential at lag 1 on ordinary text or on repeated text.
    prev = retrieval.scores["previous_token_score"]
    prev_heads = {(int(l), int(h)) for l, h in zip(*np.nonzero(prev >= 0.5))}
    assert prev_heads
    lag1 = {
        (r["layer"], r["head"])
        for r in res.artefacts["temporal_classes"]
        if r["label"] == "sequential" and r["offset"] == 1 and r["input"] in ("text", "repeated")
    }
    assert prev_heads <= lag1, (prev_heads, lag1)


def test_ships_finds_the_planted_safety_head(organism):
    """The organism's planting phase made one head (training.json names it; the analysis is not told)
    carry the refusal decision. Ships must rank it first, ablating each query's top-Ships head must
    let the held-out harmful requests through (acceptance: >= 50% when the base ASR is 0), and a
    random head per query must not. Sahara's group is measured by benchmarks/safety_organism.py: on
    this organism it does not find the head (see the README)."""
    folder = shipped_models()[NAME]
    planted = json.loads((folder / "training.json").read_text())["safety_planting"]["head"]
    family = build_family("safety")
    parts = family.parts(organism, RunContext())
    merged = family.merge({p: family.run_part(organism, RunContext(), p) for p in parts})
    ships = merged.scores["ships_mean"]
    layer, head = np.unravel_index(np.nanargmax(ships), ships.shape)
    assert f"L{layer}H{head}" == planted
    # the family's members: heads whose single ablation lets at least half of the harmful requests through
    assert [f"L{l}H{h}" for l, h in merged.members] == [planted]
    s = merged.summary["parts"]["group"]
    assert s["base_asr"] == 0.0
    assert s["asr_top_ships_per_query"] >= 0.5
    assert s["asr_random_head"] <= 0.2
