"""The retrieval family's head ranking: ties in the Wu et al. score are broken by copy attention."""

from __future__ import annotations

import numpy as np

from workbench.analysis.scores import HeadScores
from workbench.families.retrieval import ranked_heads
from workbench.models.heads import Head


def test_ties_at_the_top_are_broken_by_copy_attention():
    s = HeadScores("retrieval", 2, 3)
    s.add("retrieval_score", np.array([[1.0, 0.2, 1.0], [np.nan, 1.0, 0.0]]))
    s.add("copy_attention", np.array([[0.6, 0.2, 0.9], [np.nan, 0.99, 0.0]]))
    order = ranked_heads(s, "retrieval_score")
    assert order[:3] == [Head(1, 1), Head(0, 2), Head(0, 0)]
    assert order[3] == Head(0, 1)
    # other metrics keep their own order (no tie-break metric)
    s.add("induction_score", np.array([[0.1, 0.5, 0.3], [0.0, 0.2, 0.4]]))
    assert ranked_heads(s, "induction_score")[0] == Head(0, 1)
