"""Retrieval scoring at long context on CPU goes through the recorder (no N x N pattern)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis.retrieval import RetrievalConfig, retrieval_scores
from workbench.data.needles import text_needle_trials
from workbench.models import load_model
from workbench.models.tiny import build_tiny_model


@pytest.mark.slow
def test_retrieval_score_at_4k_tokens_on_cpu(tmp_path, monkeypatch):
    model = load_model(build_tiny_model(tmp_path, "llama", n_ctx=4096), device="cpu")
    haystack = " ".join(f"w{i % 50}" for i in range(5000)) + " ."
    trials = text_needle_trials(model.tokenizer, haystack, "w55 w56 w57 .", "w58", "w55 w56 w57", [4096], [0.5])
    assert trials[0].context_len == 4096
    largest = {"n": 0}
    real = torch.Tensor.softmax

    def watch(self, *a, **k):  # any full-pattern softmax would be >= N x N elements
        largest["n"] = max(largest["n"], self.numel())
        return real(self, *a, **k)

    monkeypatch.setattr(torch.Tensor, "softmax", watch)
    report = retrieval_scores(model, trials, RetrievalConfig(success_gate=-1.0, max_new_tokens=3))
    assert report.n_counted == 1 and np.isfinite(report.scores["retrieval_score"]).all()
    assert len(report.trials[0].generated) == 3
    assert largest["n"] < 4096 * 4096
