"""Echo/induction and head-detector scores from the recorder vs TransformerLens and the full pattern."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis.retrieval import (
    DETECTOR_METRICS,
    RAZOR_INDUCTION,
    detection_pairs,
    detector_scores,
    echo_induction_scores,
    razor_selection,
    repeated_random_tokens,
    rouge1_recall,
)
from workbench.models import load_model
from workbench.record import record_attention


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(tiny_model_dir("llama"), device="cpu")


def test_detectors_agree_with_transformer_lens_head_detector(model):
    """Same model, same input: our scores vs transformer_lens.head_detector.detect_head.

    Tolerance 1e-4: both sum fp32 attention probabilities (TL from the eager pattern, we
    from q/k and the LSE); observed differences are ~1e-7.
    """
    from transformer_lens.head_detector import detect_head

    text = " ".join(f"w{i % 13}" for i in range(40))  # repeats, so duplicate/induction targets exist
    tokens = model.bridge.to_tokens(text)
    ours = detector_scores(model, tokens)
    for kind in ("previous_token", "duplicate_token", "induction"):
        theirs = detect_head(model.bridge, text, f"{kind}_head").double().numpy()
        np.testing.assert_allclose(ours[DETECTOR_METRICS[kind]], theirs, atol=1e-4, err_msg=kind)


def test_detection_pairs_match_transformer_lens_patterns():
    from transformer_lens.head_detector import get_duplicate_token_head_detection_pattern, get_induction_head_detection_pattern

    toks = torch.tensor([[1, 5, 6, 5, 7, 6, 5, 8]])
    for kind, fn in (
        ("duplicate_token", get_duplicate_token_head_detection_pattern),
        ("induction", get_induction_head_detection_pattern),
    ):
        dense = fn(toks)
        qi, kj = detection_pairs(toks[0].tolist(), kind)
        ours = torch.zeros_like(dense)
        ours[qi, kj] = 1
        assert torch.equal(ours, dense), kind


def test_echo_and_induction_equal_the_full_pattern(model):
    seg = 17
    tokens = repeated_random_tokens(range(4, 64), seg, 3, bos=1, seed=0)
    got = echo_induction_scores(model, tokens, seg)
    _, eager = record_attention(model, tokens, backend="eager", keep_patterns=True)
    for layer, pattern in eager.patterns.items():
        p = pattern[0].double()  # [H, N, N]
        echo, ind, count = 0.0, 0.0, 0
        for i in range(1 + seg, tokens.shape[1]):
            for d in range(1, (i - 1) // seg + 1):
                echo = echo + p[:, i, i - d * seg]
                ind = ind + p[:, i, i - d * seg + 1]
                count += 1
        np.testing.assert_allclose(got["echo_score"][layer], (echo / count).numpy(), atol=1e-6)
        np.testing.assert_allclose(got[RAZOR_INDUCTION][layer], (ind / count).numpy(), atol=1e-6)
    sel = razor_selection(got, model.geometry.n_kv_heads)
    assert sel["retrieval"] and set(sel["induction"]) <= set(sel["retrieval"])


def test_rouge1_recall():
    assert rouge1_recall("w1 w2", "w2 w1 w9") == 1.0
    assert rouge1_recall("w1 w1 w2", "w1 w3") == pytest.approx(1 / 3)
    assert rouge1_recall("", "w1") == 0.0
