"""Sliding windows and logit soft-capping: every backend against the float64 reference.

The tolerances are those of test_kernels_backends (fp32 scores, fp32 accumulation; see its docstring).
Windows are chosen to hit every edge of the block logic: W = 1 (each query sees only itself), windows
shorter than, equal to and not aligned with the key blocks (16/32/64 wide here), a window longer than the
sequence (must equal full causal attention), and query offsets (chunked prefill) whose first row is
deep inside the sequence. Soft-capping uses cap 5 on peaked rows (|scores| up to ~200), where the tanh
saturates: without the cap the statistics differ by O(1).
"""

import zlib

import pytest
import torch
from test_kernels_backends import BACKENDS, _backend_device, _check, _reference, _run

from workbench.kernels import attention_with_stats, merge_stats
from workbench.kernels.accuracy import COLUMN_NAMES, STAT_NAMES, make_case
from workbench.kernels.stats import column_count

# (id, nq, nk, q_offset, sliding_window, softcap, hq, hkv)
CASES = [
    ("w1", 70, 70, 0, 1, None, 2, 1),
    ("w5-cap", 130, 130, 0, 5, 5.0, 4, 2),
    ("w16", 150, 150, 0, 16, None, 2, 2),
    ("w37-unaligned", 200, 200, 0, 37, None, 4, 2),
    ("w64-aligned", 200, 200, 0, 64, None, 2, 1),
    ("w100-cap", 230, 230, 0, 100, 5.0, 2, 1),
    ("w-longer-than-seq", 90, 90, 0, 500, None, 2, 1),
    ("offset-w23", 80, 250, 170, 23, None, 2, 1),
    ("cap-only", 120, 120, 0, None, 5.0, 4, 2),
    ("cap-offset", 60, 150, 90, None, 2.0, 2, 1),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_window_and_softcap_match_reference(backend, case, request):
    name, nq, nk, qo, sw, cap, hq, hkv = case
    device = _backend_device(backend, request)
    q, k, v = make_case(1, hq, hkv, nq, nk, 16, seed=zlib.crc32(name.encode()) % 1000)
    kw = dict(scale=0.25, causal=True, q_offset=qo, first_k=3, window=8, pool=32, sliding_window=sw, softcap=cap)
    out, st = _run(backend, q, k, v, device, **kw)
    ref = _reference(q, k, v, **kw)
    _check(out, st, *ref, torch.float32)
    assert st.sliding_window == sw and st.softcap == cap
    # the reference itself obeys the window: no mass outside it
    p = ref[2]
    if sw is not None:
        i = torch.arange(nq)[:, None] + qo
        j = torch.arange(nk)[None, :]
        outside = (j <= i - sw).expand(nq, nk)
        assert float(p[..., outside].abs().sum()) == 0.0
        inside = (j <= i) & (j > i - sw)
        assert torch.equal(st.col_count, inside.sum(0))


def test_a_window_longer_than_the_sequence_is_full_attention():
    q, k, v = make_case(1, 2, 1, 60, 60, 16, seed=11)
    kw = dict(scale=0.25, causal=True, pool=16)
    _, full = attention_with_stats(q, k, v, backend="reference", **kw)
    _, wide = attention_with_stats(q, k, v, backend="reference", sliding_window=60, **kw)
    _, narrow = attention_with_stats(q, k, v, backend="reference", sliding_window=59, **kw)
    torch.testing.assert_close(wide.lse, full.lse, atol=0, rtol=0)
    assert float((narrow.lse - full.lse).abs().max()) > 1e-3  # the 60th key matters for the last query


def test_softcap_changes_peaked_rows():
    """Capping is not a no-op on these inputs, so the matches above test something."""
    q, k, v = make_case(1, 2, 1, 40, 40, 16, seed=12)
    _, plain = attention_with_stats(q, k, v, scale=0.25, backend="reference", pool=16)
    _, capped = attention_with_stats(q, k, v, scale=0.25, backend="reference", pool=16, softcap=5.0)
    assert float((plain.entropy - capped.entropy).abs().max()) > 0.1


@pytest.mark.parametrize("backend", BACKENDS)
def test_windowed_chunked_prefill_matches_one_call(backend, request):
    device = _backend_device(backend, request)
    n, pool, sw = 200, 32, 45
    q, k, v = make_case(1, 2, 1, n, n, 16, seed=13)
    kw = dict(scale=0.25, causal=True, first_k=2, window=5, pool=pool, sliding_window=sw, softcap=5.0)
    _, whole = _run(backend, q, k, v, device, **kw)
    parts = [
        _run(backend, q[:, :, a:b], k[:, :, :b], v[:, :, :b], device, q_offset=a, **kw)[1]
        for a, b in ((0, 64), (64, 160), (160, 200))
    ]
    merged = merge_stats(parts)
    for name in (*STAT_NAMES, *COLUMN_NAMES):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name), atol=2e-6, rtol=1e-6)
    assert torch.equal(merged.col_count, whole.col_count)


def test_triton_small_blocks_with_windows(request):
    """Windows not aligned to 16- and 32-wide blocks, many tiles per pooled cell, ragged ends."""
    request.getfixturevalue("triton_ok")
    device = request.getfixturevalue("device")
    from workbench.kernels.triton_attention import triton_attention_with_stats

    q, k, v = make_case(1, 2, 1, 150, 150, 16, seed=14)
    for sw, cap in ((1, None), (13, 5.0), (40, None)):
        kw = dict(scale=0.25, causal=True, first_k=3, window=20, pool=64, sliding_window=sw, softcap=cap)
        out, st = triton_attention_with_stats(
            q.to(device), k.to(device), v.to(device), block_m=32, block_n=16, block_m_b=16, block_n_b=32, **kw
        )
        _check(out.cpu(), st.cpu(), *_reference(q, k, v, **kw), torch.float32)


def test_column_count_with_window():
    # keys 0..9, queries at positions 4..9, window 3: key j is seen by queries j..j+2 within 4..9
    got = column_count(6, 10, causal=True, q_offset=4, sliding_window=3).tolist()
    want = [sum(1 for i in range(4, 10) if i - 3 < j <= i) for j in range(10)]
    assert got == want


@pytest.mark.parametrize("bad", [0, -2, 1.5])
def test_bad_window_is_refused(bad):
    q, k, v = make_case(1, 1, 1, 8, 8, 16, seed=0)
    with pytest.raises(ValueError, match="sliding_window"):
        attention_with_stats(q, k, v, scale=0.25, backend="torch", sliding_window=bad)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_bad_softcap_is_refused(bad):
    q, k, v = make_case(1, 1, 1, 8, 8, 16, seed=0)
    with pytest.raises(ValueError, match="softcap"):
        attention_with_stats(q, k, v, scale=0.25, backend="torch", softcap=bad)
