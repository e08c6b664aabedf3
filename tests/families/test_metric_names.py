"""One name, one score: two producers may not write the same metric in one family."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.retrieval import (
    RAZOR_INDUCTION,
    TL_INDUCTION,
    detector_scores,
    echo_induction_scores,
    razor_selection,
    repeated_random_tokens,
)
from workbench.analysis.scores import HeadScores
from workbench.families.base import Family, PartResult


def test_a_metric_name_is_refused_the_second_time():
    s = HeadScores("retrieval", 1, 2)
    s.add("induction_score", np.array([[0.5, 0.1]]), "RazorAttention")
    with pytest.raises(ValueError, match="already in the retrieval scores"):
        s.add("induction_score", np.array([[0.7, 0.2]]), "TransformerLens")
    assert s["induction_score"].tolist() == [[0.5, 0.1]]  # the first producer's value is kept
    s.add("induction_score", np.array([[0.7, 0.2]]), replace=True)  # only on purpose
    assert s["induction_score"].tolist() == [[0.7, 0.2]]


def test_razorattention_and_transformerlens_induction_scores_keep_their_own_names(tiny_llama):
    """The retrieval family merges both producers into one table: their names must not meet, and
    each keeps its own definition's value (on a random model the two differ)."""
    geo = tiny_llama.geometry
    probe = repeated_random_tokens(range(4, geo.vocab_size), 16, 4, geo.bos.token_id, seed=0)
    razor = echo_induction_scores(tiny_llama, probe, 16)
    detectors = detector_scores(tiny_llama, probe)
    assert not set(razor.metrics) & set(detectors.metrics)
    assert RAZOR_INDUCTION in razor.metrics and TL_INDUCTION in detectors.metrics
    table = HeadScores("retrieval", geo.n_layers, geo.n_heads)
    for src in (razor, detectors):
        for metric, values in src.metrics.items():
            table.add(metric, values)
    np.testing.assert_array_equal(table[RAZOR_INDUCTION], razor[RAZOR_INDUCTION])
    assert not np.allclose(table[RAZOR_INDUCTION], table[TL_INDUCTION])


def test_razor_selection_reads_razorattentions_score():
    s = HeadScores("retrieval", 2, 2)
    s.add("echo_score", np.zeros((2, 2)))
    s.add(RAZOR_INDUCTION, np.array([[0.9, 0.0], [0.0, 0.1]]))
    s.add(TL_INDUCTION, np.array([[0.0, 0.0], [0.0, 0.9]]))  # a different head leads the detector
    sel = razor_selection(s, n_kv_heads=2)
    assert sel["induction"] == [(0, 0)]


class _TwoProducers(Family):
    name = "clash"

    def run_part(self, model, ctx, part):
        scores = HeadScores(self.name, 1, 1)
        scores.add("score", np.ones((1, 1)), "first producer")
        scores.add("score", np.zeros((1, 1)), "second producer")  # refused
        return PartResult(scores)


def test_a_family_whose_producers_share_a_name_fails_loudly():
    with pytest.raises(ValueError, match="'score' is already in the clash scores"):
        _TwoProducers().run_part(None, None, "all")
