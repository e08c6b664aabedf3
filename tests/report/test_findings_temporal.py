"""Temporal claims: one stated rule (classes, confidence floor) decides the claimed heads and is printed
with the headline; the heads the period-copy and induction-lag summaries name have their own rows."""

from __future__ import annotations

import numpy as np

from workbench.analysis.temporal import CLASSES
from workbench.atlas import Atlas
from workbench.families.temporal import TemporalFamily, TemporalFamilyConfig, claim_rule
from workbench.report.findings import _Builder, _headline, _temporal, build_findings
from workbench.store import Store


def test_the_temporal_headline_states_its_rule_and_the_claimed_heads_follow_it(tmp_path):
    """On the organism (small sizes: 2 prompts of 128 tokens, 2 needle trials) some heads are sequential on
    text; the rule, applied to the stored class codes and confidences, gives exactly the claimed heads."""
    opts = {"temporal": {"n_periodic": 2, "n_repeated": 2, "n_trials": 2, "budget_averages": [8]}}
    result = Atlas("organism-4l", ["temporal"], tmp_path, n_prompts=2, max_tokens=128, options=opts).run()
    with Store.open(tmp_path) as store:
        found = build_findings(store, result.run_id)
        (fam,) = store.families(result.run_id)
        scores = store.scores(result.run_id, "temporal")["temporal"]
    cfg = TemporalFamilyConfig()
    rule = fam.summary["claim_rule"]
    assert rule == claim_rule(cfg) and f">= {cfg.claim_min_confidence:g}" in rule
    (headline,) = found.headlines
    assert headline.startswith("temporal: ") and headline.endswith(f"; rule: the family {rule}")
    codes, conf = np.asarray(scores["label_code"]), np.asarray(scores["label_confidence"])

    def by_rule(floor: float) -> dict[str, str]:
        return {
            f"L{l}H{h}": CLASSES[int(codes[l, h])]
            for l, h in zip(*np.nonzero(conf >= floor))
            if CLASSES[int(codes[l, h])] in cfg.claim_classes
        }

    claimed = {f.head: r.split(": ")[1] for f in found.heads for r in f.roles if r.startswith("temporal: ")}
    assert claimed and claimed == by_rule(cfg.claim_min_confidence)
    assert headline.startswith(f"temporal: {len(claimed)} head{'s' if len(claimed) != 1 else ''} claimed")
    assert {h for heads in fam.summary["claimed"].values() for h in heads} == set(claimed)
    # the floor is the rule's: halfway between the claimed heads' confidences, it drops the lower ones
    values = sorted(float(conf[tuple(int(x) for x in h[1:].split("H"))]) for h in claimed)
    assert values[0] < values[-1]
    floor = (values[0] + values[-1]) / 2
    fewer = TemporalFamily(TemporalFamilyConfig(claim_min_confidence=floor)).members(scores)
    assert {f"L{l}H{h}" for l, h in fewer} == set(by_rule(floor)) and 0 < len(fewer) < len(claimed)
    # every head a summary names has a row with its listed role
    for name in fam.summary.get("period_copy_heads", []) + fam.summary.get("induction_lag_heads", []):
        assert any(f.head == name and any(r.startswith("temporal, listed: ") for r in f.roles) for f in found.heads)


def test_the_period_copy_and_induction_lag_heads_get_rows_and_are_named_in_the_headline():
    summary = {
        "claim_rule": claim_rule(TemporalFamilyConfig()),
        "claimed": {"sequential": ["L0H1"], "re-access": [], "seasonal": []},
        "planted_period": 7,
        "period_copy_heads": ["L1H0", "L1H3"],
        "period_copy": {"rule": "...", "heads": {"L1H0": 0.81, "L1H3": 0.55}},
        "repeat_len": 40,
        "induction_lag_heads": ["L2H2", "L0H1"],
        "induction_lag": {"rule": "...", "heads": {"L2H2": 0.9, "L0H1": 0.7}},
    }
    art = {"temporal_classes": [{"input": "text", "layer": 0, "head": 1, "label": "sequential", "confidence": 0.95}]}
    b = _Builder()
    _temporal(b, [(0, 1)], {}, summary, art)
    roles = {f.head: f.roles for f in b.heads.values()}
    assert roles["L1H0"] == roles["L1H3"] == ["temporal, listed: period copy on periodic text (P = 7)"]
    assert roles["L2H2"] == ["temporal, listed: induction lag 39 on repeated text"]
    assert roles["L0H1"] == ["temporal: sequential", "temporal, listed: induction lag 39 on repeated text"]
    assert "period-copy share 0.81" in b.heads[(1, 0)].scores
    text = _headline("temporal", b, "temporal", summary)
    assert text.startswith("temporal: 1 head claimed (sequential: L0H1 | ")  # the listed heads are not counted
    assert "period copy on periodic text (P = 7): L1H0, L1H3" in text and "induction lag 39 on repeated text: L2H2, L0H1" in text
    # a run stored before the rule existed: names only, still linked
    old = {"planted_period": 7, "period_copy_heads": ["L1H2"]}
    b = _Builder()
    _temporal(b, [], {}, old, {})
    assert b.heads[(1, 2)].roles == ["temporal, listed: period copy on periodic text (P = 7)"]
