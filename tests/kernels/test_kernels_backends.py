"""Torch-chunked and Triton backends against the float64 reference.

Tolerances (absolute unless said otherwise) and why:

* Statistics from fp32 inputs: the scores are formed in fp32, so each carries a relative rounding error of
  a few 2**-24 * sqrt(D); everything downstream is accumulated in fp32. Probabilities, masses, entropy:
  1e-5. LSE: 1e-5 + 2e-6 * |lse| (peaked rows here have |lse| ~ 800, where fp32 can't do better than ~1e-4).
  Column sums and pooled cells add up to N probabilities: 2e-5 + 1e-6 * value, plus each row's share of
  its LSE error (p_ij * 2e-6 * |lse_i|), since pass B recomputes p from the stored LSE.
* fp16 / bf16 inputs: the reference is computed from the *same rounded inputs* upcast to float64, and the
  kernels compute scores from exactly those values in fp32, so the statistics keep the fp32 tolerances.
* The output is returned in the input dtype: fp32 5e-5 (peaked rows have |s| ~ 800, whose fp32 rounding,
  ~1e-4, moves the runner-up probabilities by ~1e-4 relative; typical rows are at ~2e-6); fp16 2e-3 (final rounding is 2**-11 relative,
  |out| < 2, plus ~3e-4 from rounding p to fp16 before the PV matmul on a GPU); bf16 relative 2**-7 of
  |out| + 1e-3 (the interpreter converts fp32 -> bf16 by truncation: up to one bf16 ulp).
* argmax: exact, except rows where the reference probability of the chosen key is within 1e-6 of the
  maximum (a near-tie that fp32 rounding can legitimately flip).
"""

import zlib

import pytest
import torch

from workbench.kernels import AttentionStats, attention_with_stats, merge_stats
from workbench.kernels.accuracy import COLUMN_NAMES, STAT_NAMES, make_case, max_errors
from workbench.kernels.reference import reference_attention_with_stats

BACKENDS = ["torch", "triton"]


def _backend_device(backend, request):
    if backend == "triton":
        request.getfixturevalue("triton_ok")
        return request.getfixturevalue("device")
    return "cpu"


def _run(backend, q, k, v, device, **kw):
    extra = {"chunk": 64} if backend == "torch" else {}
    out, st = attention_with_stats(q.to(device), k.to(device), v.to(device), backend=backend, **kw, **extra)
    return out.cpu(), st.cpu()


def _reference(q, k, v, **kw):
    return reference_attention_with_stats(q.double(), k.double(), v.double(), return_probs=True, stats_dtype=torch.float64, **kw)


def _check(out, st, ref_out, ref_st, ref_p, dtype):
    err = max_errors(out, st, ref_out, ref_st, ref_p)
    for name in STAT_NAMES:
        ref = getattr(ref_st, name)
        mine = getattr(st, name).double()
        tol = 1e-5 + (2e-6 * ref.abs() if name == "lse" else 0.0)
        bad = (mine - ref).abs() > tol
        assert not bool(bad.any()), f"{name}: max err {err[name]:.3g}"
    # Column statistics re-derive p = exp(s - lse) per cell, so a row's cells inherit its LSE error
    # (2e-6 * |lse|, as above): the column bound adds each row's share p_ij * 2e-6 * |lse_i|.
    row_err = ref_p * (2e-6 * ref_st.lse.abs())[..., None]
    inherited = {"col_sum": row_err.sum(-2), "col_max": row_err.amax(-2)}
    if ref_st.pooled is not None:
        pool = ref_st.pool
        nq, nk = row_err.shape[-2:]
        padded = row_err.new_zeros(*row_err.shape[:-2], -(-nq // pool) * pool, -(-nk // pool) * pool)
        padded[..., :nq, :nk] = row_err
        inherited["pooled"] = padded.unflatten(-1, (-1, pool)).sum(-1).unflatten(-2, (-1, pool)).sum(-2)
    for name in COLUMN_NAMES:
        if getattr(ref_st, name) is None:
            continue
        ref = getattr(ref_st, name)
        bad = (getattr(st, name).double() - ref).abs() > 2e-5 + 1e-6 * ref.abs() + inherited[name]
        assert not bool(bad.any()), f"{name}: max err {err[name]:.3g}"
    ref_o = ref_out.to(torch.float64)
    o = out.double()
    if dtype == torch.float32:
        assert err["out"] <= 5e-5, err["out"]
    elif dtype == torch.float16:
        assert err["out"] <= 2e-3, err["out"]
    else:
        assert bool(((o - ref_o).abs() <= 2.0**-7 * ref_o.abs() + 1e-3).all()), err["out"]
    assert err["argmax"] == 0, f"{err['argmax']} argmax rows differ beyond near-ties"
    assert st.argmax.dtype == torch.int64
    for name in ("lse", "entropy", "pmax", "first_k_mass", "window_mass", *COLUMN_NAMES):
        t = getattr(st, name)
        if t is not None:
            assert t.dtype == torch.float32, name
            assert bool(torch.isfinite(t).all()), name
    return err


# (id, causal, nq, nk, q_offset, d, hq, hkv, dtype)
CASES = [
    ("causal-200-d64-gqa", True, 200, 200, 0, 64, 4, 2, torch.float32),
    ("noncausal-333-d16-gqa", False, 333, 333, 0, 16, 4, 2, torch.float32),
    ("causal-333-d16-fp16", True, 333, 333, 0, 16, 4, 2, torch.float16),
    ("noncausal-200-d64-fp16", False, 200, 200, 0, 64, 4, 2, torch.float16),
    ("causal-offset-233", True, 100, 333, 233, 64, 4, 2, torch.float32),
    ("noncausal-offset-d40", False, 150, 300, 7, 40, 2, 1, torch.float32),
    ("causal-d128", True, 96, 96, 0, 128, 2, 1, torch.float32),
    ("causal-200-d64-bf16", True, 200, 200, 0, 64, 4, 2, torch.bfloat16),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_reference(backend, case, request):
    _, causal, nq, nk, qo, d, hq, hkv, dtype = case
    device = _backend_device(backend, request)
    q, k, v = make_case(1, hq, hkv, nq, nk, d, dtype=dtype, seed=zlib.crc32(case[0].encode()) % 1000)
    kw = dict(scale=d**-0.5, causal=causal, q_offset=qo, first_k=3, window=8, pool=32)
    out, st = _run(backend, q, k, v, device, **kw)
    assert out.dtype == dtype and out.shape == q.shape
    assert st.col_sum.shape == (1, hq, nk) and st.pooled.shape == (1, hq, -(-nq // 32), -(-nk // 32))
    ref = _reference(q, k, v, **kw)
    _check(out, st, *ref, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_and_batch(backend, request):
    """Batch of 2, a scale that is not D**-0.5, pool 16, first_k larger than a block."""
    device = _backend_device(backend, request)
    q, k, v = make_case(2, 2, 2, 70, 70, 32, seed=5)
    kw = dict(scale=0.7, causal=True, first_k=20, window=3, pool=16)
    out, st = _run(backend, q, k, v, device, **kw)
    _check(out, st, *_reference(q, k, v, **kw), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sink_flat_and_peaked_rows(backend, request):
    """The special rows behave as they should (not only 'match the reference')."""
    device = _backend_device(backend, request)
    q, k, v = make_case(1, 4, 2, 64, 64, 16, seed=1)
    out, st = _run(backend, q, k, v, device, scale=0.25, causal=True, first_k=1, window=4, pool=16)
    # sink head: the rows that are not zero put almost all mass on key 0
    sink_rows = [i for i in range(64) if not 5 <= i < 10]
    assert bool((st.first_k_mass[0, 0, sink_rows] > 0.99).all())
    assert bool((st.argmax[0, 0, sink_rows] == 0).all())
    # flat rows (q = 0): uniform over the i + 1 visible keys, argmax the earliest (key 0)
    rows = torch.arange(5, 10)
    torch.testing.assert_close(st.entropy[0, :, 5:10], torch.log(rows + 1.0).expand(4, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(st.pmax[0, :, 5:10], (1.0 / (rows + 1.0)).expand(4, 5), atol=1e-6, rtol=0)
    assert bool((st.argmax[0, :, 5:10] == 0).all())
    # peaked rows (scores x30): one key dominates (a few rows have a close runner-up)
    assert bool((st.pmax[0, 1:, 10:15] > 0.5).all()) and float(st.pmax[0, 1:, 10:15].median()) > 0.99


@pytest.mark.parametrize("backend", BACKENDS)
def test_argmax_ties_pick_earliest(backend, request):
    """Equal maximal scores in different key blocks: the earliest key wins."""
    device = _backend_device(backend, request)
    n, d = 150, 16
    g = torch.Generator().manual_seed(3)
    q = torch.zeros(1, 1, n, d)
    q[..., 0] = 1.0
    k = 0.01 * torch.randn(1, 1, n, d, generator=g)
    k[..., 0] = 0.0
    for j in (3, 70, 140):  # blocks 0, 1, 2 for 64-wide key blocks
        k[0, 0, j] = 0.0
        k[0, 0, j, 0] = 4.0
    v = torch.randn(1, 1, n, d, generator=g)
    _, st = _run(backend, q, k, v, device, scale=1.0, causal=True, pool=16)
    am = st.argmax[0, 0]
    assert bool((am[3:] == 3).all()), am[3:].unique()
    assert st.argmax.dtype == torch.int64


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunked_prefill_matches_one_call(backend, request):
    """Query chunks with q_offset, merged, equal one call over all queries (col sums and pooled add up)."""
    device = _backend_device(backend, request)
    n, pool = 250, 32
    q, k, v = make_case(1, 4, 2, n, n, 16, seed=7)
    kw = dict(scale=0.25, causal=True, first_k=2, window=5, pool=pool)
    _, whole = _run(backend, q, k, v, device, **kw)
    parts = []
    for start, end in ((0, 64), (64, 192), (192, 250)):
        _, st = _run(backend, q[:, :, start:end], k[:, :, :end], v[:, :, :end], device, q_offset=start, **kw)
        assert st.col_sum.shape[-1] == end
        parts.append(st)
    merged = merge_stats(parts)
    assert isinstance(merged, AttentionStats)
    for name in (*STAT_NAMES, *COLUMN_NAMES):
        # same arithmetic on the same rows/columns, only grouped differently: fp32 summation order
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name), atol=2e-6, rtol=1e-6)
    assert torch.equal(merged.argmax, whole.argmax)
    assert torch.equal(merged.col_count, whole.col_count)
    assert merged.n_keys == n and merged.q_offset == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_columns_false(backend, request):
    device = _backend_device(backend, request)
    q, k, v = make_case(1, 2, 1, 40, 40, 16, seed=2)
    _, with_cols = _run(backend, q, k, v, device, scale=0.25, pool=16)
    _, st = _run(backend, q, k, v, device, scale=0.25, columns=False, pool=16)
    assert st.col_sum is None and st.col_max is None and st.pooled is None and st.col_mean is None
    torch.testing.assert_close(st.lse, with_cols.lse)
    torch.testing.assert_close(st.window_mass, with_cols.window_mass)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mass_edge_parameters(backend, request):
    device = _backend_device(backend, request)
    q, k, v = make_case(1, 2, 1, 40, 40, 16, seed=4)
    _, st = _run(backend, q, k, v, device, scale=0.25, first_k=0, window=0, pool=16)
    assert bool((st.first_k_mass == 0).all()) and bool((st.window_mass == 0).all())
    _, st = _run(backend, q, k, v, device, scale=0.25, first_k=10**6, window=10**6, pool=16)
    torch.testing.assert_close(st.first_k_mass, torch.ones_like(st.first_k_mass), atol=1e-6, rtol=0)
    torch.testing.assert_close(st.window_mass, torch.ones_like(st.window_mass), atol=1e-6, rtol=0)
    # columns of a causal call: every visible query's row sums to 1, so sum(col_sum) = Nq
    torch.testing.assert_close(st.col_sum.sum(-1), torch.full((1, 2), 40.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(st.pooled.sum((-1, -2)), torch.full((1, 2), 40.0), atol=1e-4, rtol=0)


def test_triton_block_sizes_and_large_pool(request):
    """Small blocks (many tiles, ragged ends) and pool > key block (several tiles per pooled cell)."""
    request.getfixturevalue("triton_ok")
    device = request.getfixturevalue("device")
    from workbench.kernels.triton_attention import triton_attention_with_stats

    q, k, v = make_case(1, 2, 1, 200, 200, 16, seed=9)
    for causal in (True, False):
        kw = dict(scale=0.25, causal=causal, first_k=3, window=20, pool=128)
        out, st = triton_attention_with_stats(
            q.to(device), k.to(device), v.to(device), block_m=32, block_n=16, block_m_b=16, block_n_b=32, **kw
        )
        _check(out.cpu(), st.cpu(), *_reference(q, k, v, **kw), torch.float32)


def test_triton_pool_must_be_multiple_of_16(request):
    request.getfixturevalue("triton_ok")
    device = request.getfixturevalue("device")
    q, k, v = make_case(1, 1, 1, 20, 20, 16, seed=0)
    with pytest.raises(ValueError, match="multiple of 16"):
        attention_with_stats(q.to(device), k.to(device), v.to(device), scale=0.25, pool=10, backend="triton")


def test_torch_any_pool_and_chunk():
    """The torch backend takes any pool and any chunk (pool not dividing the chunk, chunk 1)."""
    q, k, v = make_case(1, 2, 1, 53, 53, 16, seed=3)
    kw = dict(scale=0.25, causal=True, first_k=2, window=4, pool=10)
    ref = _reference(q, k, v, **kw)
    for chunk in (1, 7, 64):
        out, st = attention_with_stats(q, k, v, backend="torch", chunk=chunk, **kw)
        _check(out, st, *ref, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_inputs_and_single_query(backend, request):
    """q/k/v as [B, N, H, D] tensors viewed as [B, H, N, D] (HF layout), and one decode query."""
    device = _backend_device(backend, request)
    q, k, v = make_case(1, 4, 2, 45, 45, 16, seed=8)
    qs, ks, vs = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v))
    assert not qs.is_contiguous()
    kw = dict(scale=0.25, causal=True, first_k=2, window=6, pool=16)
    out, st = _run(backend, qs, ks, vs, device, **kw)
    _check(out, st, *_reference(q, k, v, **kw), torch.float32)
    # decode step: one query at the last position sees every key
    kw1 = dict(kw, q_offset=44)
    out1, st1 = _run(backend, q[:, :, 44:], k, v, device, **kw1)
    _check(out1, st1, *_reference(q[:, :, 44:], k, v, **kw1), torch.float32)
    torch.testing.assert_close(st1.lse, st.lse[..., 44:], atol=1e-5, rtol=0)
