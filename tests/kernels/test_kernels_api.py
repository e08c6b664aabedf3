"""API surface: validation errors, dispatch, the stats container, merging, offset_profile, the reference."""

import math

import pytest
import torch
import torch.nn.functional as F

from workbench.kernels import (
    AttentionStats,
    StatsAccumulator,
    attention_with_stats,
    column_count,
    merge_stats,
    offset_profile,
    resolve_backend,
)
from workbench.kernels.accuracy import make_case
from workbench.kernels.reference import reference_attention_with_stats


def _qkv(hq=2, hkv=1, nq=12, nk=12, d=16, dtype=torch.float32):
    return make_case(1, hq, hkv, nq, nk, d, dtype=dtype, seed=0, special=False)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_bad_shapes_raise_clear_errors(backend):
    q, k, v = _qkv(hq=3, hkv=2)
    with pytest.raises(ValueError, match=r"query heads \(3\) must be a multiple .* \(2\)"):
        attention_with_stats(q, k, v, scale=1.0, backend=backend)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="head dim differs: q has D=16, k/v have D=8"):
        attention_with_stats(q, k[..., :8], v[..., :8], scale=1.0, backend=backend)
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        attention_with_stats(q, k, v[..., :8], scale=1.0, backend=backend)
    with pytest.raises(ValueError, match=r"q_offset \+ Nq <= Nk.*q_offset=3, Nq=12, Nk=12"):
        attention_with_stats(q, k, v, scale=1.0, q_offset=3, backend=backend)
    with pytest.raises(ValueError, match="4-D"):
        attention_with_stats(q[0], k, v, scale=1.0, backend=backend)
    with pytest.raises(ValueError, match="share a dtype"):
        attention_with_stats(q.half(), k, v, scale=1.0, backend=backend)
    with pytest.raises(ValueError, match="q_offset must be a non-negative"):
        attention_with_stats(q, k, v, scale=1.0, q_offset=-1, causal=False, backend=backend)
    with pytest.raises(ValueError, match="pool must be >= 1"):
        attention_with_stats(q, k, v, scale=1.0, pool=0, backend=backend)
    # non-causal attention may have more queries than keys after q_offset
    attention_with_stats(q, k, v, scale=1.0, q_offset=3, causal=False, backend=backend)


@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_nan_inputs_are_reported(which):
    q, k, v = _qkv()
    t = {"q": q, "k": k, "v": v}[which]
    t[0, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=rf"^{which} contains non-finite values \(1 NaN, 0 Inf\)"):
        attention_with_stats(q, k, v, scale=1.0, backend="torch")
    t[0, 0, 2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"\(0 NaN, 1 Inf\)"):
        attention_with_stats(q, k, v, scale=1.0, backend="torch")


def test_backend_names_and_auto():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend must be one of"):
        attention_with_stats(q, k, v, scale=1.0, backend="flash")
    assert resolve_backend("auto", q) == "torch"  # CPU tensors
    assert resolve_backend("triton", q) == "triton"
    if torch.cuda.is_available():
        assert resolve_backend("auto", q.cuda()) == "triton"
        assert resolve_backend("auto", q.cuda(), pool=10) == "torch"
    out_auto, st_auto = attention_with_stats(q, k, v, scale=0.3)
    out_t, st_t = attention_with_stats(q, k, v, scale=0.3, backend="torch")
    assert torch.equal(out_auto, out_t) and torch.equal(st_auto.lse, st_t.lse)


def test_triton_rejects_float64(request):
    request.getfixturevalue("triton_ok")
    q, k, v = _qkv(dtype=torch.float64)
    with pytest.raises(ValueError, match="float64"):
        attention_with_stats(q, k, v, scale=1.0, backend="triton")


def test_reference_refuses_long_sequences():
    q = torch.zeros(1, 1, 1, 16).expand(1, 1, 20000, 16)
    k = torch.zeros(1, 1, 1, 16).expand(1, 1, 20000, 16)
    with pytest.raises(ValueError, match="use backend='torch'"):
        reference_attention_with_stats(q, k, k, scale=1.0)


# ------------------------------------------------------------------ stats container


def test_col_count_and_mean_match_the_mask():
    q, k, v = make_case(1, 2, 1, 30, 50, 16, seed=1, special=False)
    _, st, p = reference_attention_with_stats(q, k, v, scale=0.25, q_offset=20, return_probs=True)
    visible = (torch.arange(50)[None, :] <= 20 + torch.arange(30)[:, None]).sum(0)
    assert torch.equal(st.col_count, visible)
    assert st.col_count.dtype == torch.int64
    torch.testing.assert_close(st.col_mean, st.col_sum / visible.clamp(min=1).float())
    _, st_nc = reference_attention_with_stats(q, k, v, scale=0.25, causal=False)
    assert bool((st_nc.col_count == 30).all())
    assert torch.equal(column_count(3, 5, causal=True, q_offset=1), torch.tensor([3, 3, 2, 1, 0]))


def test_stats_to_and_cpu():
    q, k, v = _qkv()
    _, st = attention_with_stats(q, k, v, scale=0.3, backend="torch")
    moved = st.to("cpu")
    assert isinstance(moved, AttentionStats) and moved.n_keys == st.n_keys and moved.pool == st.pool
    assert torch.equal(st.cpu().pooled, st.pooled)
    if torch.cuda.is_available():
        g = st.to("cuda")
        assert g.lse.is_cuda and g.col_count.is_cuda and g.cpu().lse.device.type == "cpu"


def test_merge_rejects_gaps_and_misaligned_pool():
    q, k, v = make_case(1, 2, 1, 64, 64, 16, seed=2, special=False)
    kw = dict(scale=0.25, pool=16)
    _, a = attention_with_stats(q[:, :, :16], k[:, :, :16], v[:, :, :16], backend="torch", **kw)
    _, c = attention_with_stats(q[:, :, 32:], k, v, backend="torch", q_offset=32, **kw)
    with pytest.raises(ValueError, match="contiguous"):
        merge_stats([a, c])
    _, a = attention_with_stats(q[:, :, :20], k[:, :, :20], v[:, :, :20], backend="torch", **kw)
    _, b = attention_with_stats(q[:, :, 20:], k, v, backend="torch", q_offset=20, **kw)
    with pytest.raises(ValueError, match="multiple of pool=16"):
        merge_stats([a, b])
    # without columns, any chunking merges
    kw = dict(scale=0.25, pool=16, columns=False)
    _, a = attention_with_stats(q[:, :, :20], k[:, :, :20], v[:, :, :20], backend="torch", **kw)
    _, b = attention_with_stats(q[:, :, 20:], k, v, backend="torch", q_offset=20, **kw)
    _, whole = attention_with_stats(q, k, v, backend="torch", **kw)
    acc = StatsAccumulator()
    acc.add(a)
    acc.add(b)
    torch.testing.assert_close(acc.result().entropy, whole.entropy)
    with pytest.raises(ValueError, match="no chunks"):
        StatsAccumulator().result()


# ------------------------------------------------------------------ offset_profile


def _dense_offset_profile(p, max_offset, q_offset):
    b, h, nq, nk = p.shape
    res = torch.zeros(b, h, max_offset, dtype=torch.float64)
    for r in range(max_offset):
        vals = [p[..., i, q_offset + i - r] for i in range(nq) if 0 <= q_offset + i - r < nk]
        if vals:
            res[..., r] = torch.stack(vals, -1).mean(-1)
    return res


@pytest.mark.parametrize("q_offset,max_offset,chunk", [(0, 20, 7), (25, 40, 256), (0, 100, 16)])
def test_offset_profile_matches_dense(q_offset, max_offset, chunk):
    nq = 60
    # moderate scores (no x30 rows): the float32 LSE/scores then give p to ~1e-6 relative
    q, k, v = make_case(1, 4, 2, nq, nq + q_offset, 16, seed=3, special=False)
    _, st, p = reference_attention_with_stats(
        q, k, v, scale=0.25, q_offset=q_offset, return_probs=True, stats_dtype=torch.float64
    )
    prof = offset_profile(q, k, st.lse.float(), scale=0.25, max_offset=max_offset, q_offset=q_offset, chunk=chunk)
    assert prof.shape == (1, 4, max_offset) and prof.dtype == torch.float32
    torch.testing.assert_close(prof.double(), _dense_offset_profile(p, max_offset, q_offset), atol=2e-6, rtol=1e-5)
    if max_offset > nq + q_offset:
        assert bool((prof[..., nq + q_offset :] == 0).all())


def test_offset_profile_from_torch_backend_lse():
    q, k, v = make_case(1, 2, 1, 80, 80, 16, seed=4)
    _, st = attention_with_stats(q, k, v, scale=0.25, backend="torch")
    prof = offset_profile(q, k, st.lse, scale=0.25, max_offset=8)
    # local mass over the window of 8 = sum over offsets of the per-query probabilities (same rows)
    _, st8 = attention_with_stats(q, k, v, scale=0.25, window=8, backend="torch")
    per_query_local = st8.window_mass[..., 7:].mean(-1)  # rows with all 8 offsets present
    prof_rows = offset_profile(q[:, :, 7:], k, st.lse[..., 7:], scale=0.25, max_offset=8, q_offset=7)
    torch.testing.assert_close(prof_rows.sum(-1), per_query_local, atol=1e-5, rtol=0)
    assert prof[..., 0].min() > 0  # every query sees itself
    with pytest.raises(ValueError, match="lse must have shape"):
        offset_profile(q, k, st.lse[..., :5], scale=0.25, max_offset=8)


# ------------------------------------------------------------------ the reference itself


def test_reference_matches_sdpa_and_identities():
    q, k, v = make_case(1, 2, 2, 40, 40, 16, dtype=torch.float64, seed=5)
    out, st, p = reference_attention_with_stats(
        q, k, v, scale=0.3, first_k=2, window=5, pool=8, return_probs=True, stats_dtype=torch.float64
    )
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3))
    s = 0.3 * q @ k.transpose(-1, -2)
    s = s.masked_fill(~torch.ones(40, 40, dtype=torch.bool).tril(), float("-inf"))
    torch.testing.assert_close(st.lse, torch.logsumexp(s, -1))
    # H = LSE - E_p[s]
    torch.testing.assert_close(st.entropy, st.lse - (p * s.nan_to_num(neginf=0.0)).sum(-1))
    torch.testing.assert_close(st.pmax, p.amax(-1))
    torch.testing.assert_close(st.first_k_mass, p[..., :2].sum(-1))
    i = 20
    torch.testing.assert_close(st.window_mass[..., i], p[..., i, i - 4 : i + 1].sum(-1))
    torch.testing.assert_close(st.pooled[..., 1, 0], p[..., 8:16, 0:8].sum((-1, -2)))
    torch.testing.assert_close(st.col_sum.sum(-1), torch.full((1, 2), 40.0, dtype=torch.float64))
    assert math.isclose(float(st.entropy[0, 0, 0]), 0.0, abs_tol=1e-12)  # first row sees one key


def test_torch_backend_accepts_grad_inputs_and_noncontiguous():
    q, k, v = make_case(1, 4, 2, 33, 33, 16, seed=6)
    q_nc = q.transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)  # strided view
    assert not q_nc.is_contiguous()
    out, st = attention_with_stats(q_nc, k, v, scale=0.25, backend="torch")
    out_ref, st_ref = attention_with_stats(q, k, v, scale=0.25, backend="torch")
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(st.entropy, st_ref.entropy)
