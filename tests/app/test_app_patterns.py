"""Downsampling patterns for the browser: exact block sums, rows that sum to 1, bounded size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.app import patterns as P
from workbench.app.figures import pattern_figure


def causal_pattern(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, n))
    logits[np.triu_indices(n, 1)] = -np.inf
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def test_recorder_pool_gives_at_most_max_side_blocks():
    for n in (1025, 4096, 8192, 8193, 16384, 32768, 100_000):
        pool = P.recorder_pool(n)
        assert pool >= P.MIN_POOL and pool & (pool - 1) == 0
        assert -(-n // pool) <= P.MAX_SIDE
    assert P.recorder_pool(16384) == 128


def test_short_pattern_is_sent_whole():
    p = causal_pattern(40)
    g = P.grid_from_full(p)
    assert g.kind == "full" and g.block == 1 and g.shape == (40, 40)
    np.testing.assert_allclose(np.nansum(g.values, 1), 1.0, rtol=1e-5)
    assert np.isnan(g.values[0, 1]) and g.values[1, 0] == pytest.approx(p[1, 0])


def test_pooling_is_block_sums_over_queries():
    n = 300
    p = causal_pattern(n, 1)
    g = P.grid_from_full(p, max_side=128)
    assert g.kind == "pooled" and g.block == 3 and g.shape == (100, 100)
    np.testing.assert_allclose(g.values[10, 4], p[30:33, 12:15].sum() / 3, rtol=1e-5)
    np.testing.assert_allclose(np.nansum(g.values, 1), 1.0, rtol=1e-4)  # each row: a query's whole attention


def test_recorder_map_is_pooled_further_when_needed():
    n, pool = 1600, 8
    big = np.kron(causal_pattern(n // 16, 2), np.ones((16, 16))) / 16  # causal per 16-block, rows sum to 1
    sums = P.block_pool(big, pool)  # what the recorder returns: [200, 200] block sums
    g = P.grid_from_pooled(sums, pool, n)
    assert g.shape == (100, 100) and g.block == 2 * pool and g.source_block == pool
    np.testing.assert_allclose(g.values[7, 3], big[112:128, 48:64].sum() / 16, rtol=1e-5)
    np.testing.assert_allclose(np.nansum(g.values, 1), 1.0, rtol=1e-4)


def test_labels_and_clicks():
    toks = [f"t{i}" for i in range(10)]
    assert P.axis_labels(toks, 1)[3] == "3 t3"
    labels = P.axis_labels(toks, 4)
    assert labels == ["0–3 t0 t1 t2", "4–7 t4 t5 t6", "8–9 t8 t9"]
    assert P.label_position(labels[1]) == 7 and P.label_position("3 t3") == 3 and P.label_position("x") is None
    assert P.token_window(100, 50) == (0, 100) and P.token_window(1000, 500, 300) == (201, 501)


def test_browser_payload_is_small_at_16k():
    """The figure for a 16k-token prompt (pooled to 128 x 128) stays far under a few hundred KB."""
    from dash._utils import to_json

    rng = np.random.default_rng(0)
    pooled = rng.random((128, 128)).astype(np.float32)
    g = P.grid_from_pooled(pooled, 128, 16384)
    fig = pattern_figure(g, P.axis_labels([f"w{i}" for i in range(16384)], g.block), "x")
    payload = to_json(fig)
    assert len(payload) < 150_000, len(payload)
    assert '"bdata"' in payload  # a typed array, not 16k decimal numbers
    assert json.loads(payload)["data"][0]["z"]["dtype"] == "f4"
