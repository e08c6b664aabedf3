"""Triton instrumented attention: pass A (query-major, fused with the output) and pass B (key-major).

Pass A, one program per (BLOCK_M query tile, batch x query head), streams the key/value blocks with the
online softmax in base 2 (``t = s * log2(e)``) and keeps, per query row, in float32:

* ``m`` running max of ``t`` and ``l = sum exp2(t - m)`` (the usual online softmax),
* ``a = sum exp2(t - m) * (t - m)`` (centred entropy accumulator; on a new max ``m'`` it becomes
  ``alpha * (a + (m - m') * l) + block term`` with ``alpha = exp2(m - m')`` and the *old* ``l``),
* the running argmax (strict ``>`` across blocks, ``tl.max`` ties to the left within a block, so the
  earliest key wins), ``p(argmax) = 1 / l`` at the end,
* ``sink = sum_{j < first_k} exp2(t_j - m)`` and ``local = sum_{qpos - window < j <= qpos} exp2(t_j - m)``,
  both rescaled by ``alpha`` like ``l`` and divided by ``l`` at the end,
* the output accumulator ``acc`` (``O = acc / l``).

Finals: ``lse2 = m + log2 l`` (base-2 LSE, kept for pass B), ``lse = lse2 * ln 2``,
``H = ln 2 * (log2 l - a / l)``.

Masking: masked scores are set to the finite value ``-1e30`` (not ``-inf``) and ``m`` starts at ``-1e30``,
so ``p * (t - m) = 0 * (finite)`` and ``(m - m') * l = finite * 0`` never produce NaN. Every row has a
visible key in the first block it processes (key 0), so a masked value never becomes the row max.

Causal loops are split STAGE-style: key blocks entirely before the tile's first query position run without
masks, then the diagonal band (and the ragged end of the keys) runs with masks; blocks after the
tile's last query position are never visited.

Pass B, one program per (BLOCK_N key tile, batch x query head), loads its K tile once and streams the
query tiles that can see it (causal: from the tile containing query ``key - q_offset``), recomputing
``p = exp2(t - lse2)`` from the stored base-2 LSE. It accumulates the column sums and the column max in
registers and the per-(query tile, key tile) sum into a ``[ceil(Nq/pool), ceil(Nk/BLOCK_N)]`` buffer whose
column is owned by this program only (plain load-add-store, no atomics, deterministic). The host sums
groups of ``pool / BLOCK_N`` key tiles into the pooled map, so ``pool`` must be a multiple of 16 and the
block sizes are chosen to divide it.

Sliding windows (``WINDOWED``): query ``i`` sees keys ``i - W < j <= i``. Pass A starts at the key block
holding ``qpos_lo - W + 1`` (blocks before it are skipped, so a windowed layer costs O(N x W)); the blocks
that straddle the window's lower edge run masked, and masked probabilities are zeroed explicitly because a
row may see no key at all in its first block. Pass B stops at the query tile past ``key + W - 1``.
Soft-capping (``SOFTCAP``, Gemma 2): ``s = cap * tanh(scale * q.k / cap)``; the kernels take
``qk_scale = scale / cap`` and ``cap_log2e = cap * log2(e)`` and compute ``tanh`` from ``exp2`` of ``-2|x|``
(no overflow), so the scores stay in base 2 for the online softmax.

GQA: query head ``h`` reads kv head ``h // group`` by pointer arithmetic (no copy).
Head dims that are not a power of two are padded (masked loads, zeros contribute nothing to q.k).
Inputs of any float dtype; all statistics are float32. Under the interpreter (``TRITON_INTERPRET=1``) the
tiles are upcast to float32 right after loading because bf16 ``tl.dot`` is wrong there; on a GPU, fp16/bf16
tiles go to ``tl.dot`` natively (fp32 accumulation) and fp32 inputs use ``input_precision="ieee"``.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

from ._validate import check_inputs
from .stats import AttentionStats

__all__ = ["triton_attention_with_stats", "pass_a", "pass_b", "is_interpreting"]

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


def is_interpreting() -> bool:
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # older triton
        return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# --------------------------------------------------------------------------------------------------
# shared: soft-capped scores
# --------------------------------------------------------------------------------------------------


@triton.jit
def _tanh(x):
    """tanh from exp2 of a non-positive argument: exact limits, no overflow for any finite x."""
    LOG2E: tl.constexpr = 1.4426950408889634
    e = tl.math.exp2(-2.0 * LOG2E * tl.abs(x))
    th = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -th, th)


# --------------------------------------------------------------------------------------------------
# pass A: query-major forward with statistics
# --------------------------------------------------------------------------------------------------


@triton.jit
def _pass_a_inner(
    acc,
    l_i,
    m_i,
    a_i,
    amax,
    sink,
    local,
    q,
    k_base,
    v_base,
    stride_kn,
    stride_kd,
    stride_vn,
    stride_vd,
    offs_d,
    qpos,
    qpos_lo,
    qpos_hi,
    lo,
    hi,
    n_keys,
    qk_scale,
    first_k,
    window,
    sliding_window,
    cap_log2e,
    HEAD_DIM: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_FP32: tl.constexpr,
    WINDOWED: tl.constexpr,
    SOFTCAP: tl.constexpr,
):
    NEG: tl.constexpr = -1.0e30
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd  # [D_PAD, BLOCK_N]
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd  # [BLOCK_N, D_PAD]
        if MASK:
            kT = tl.load(k_ptrs, mask=(offs_n[None, :] < n_keys) & (offs_d[:, None] < HEAD_DIM), other=0.0)
            v = tl.load(v_ptrs, mask=(offs_n[:, None] < n_keys) & (offs_d[None, :] < HEAD_DIM), other=0.0)
        else:
            if HEAD_DIM == D_PAD:
                kT = tl.load(k_ptrs)
                v = tl.load(v_ptrs)
            else:
                kT = tl.load(k_ptrs, mask=offs_d[:, None] < HEAD_DIM, other=0.0)
                v = tl.load(v_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
        if DOT_FP32:
            kT = kT.to(tl.float32)
            v = v.to(tl.float32)
            qk = tl.dot(q, kT, input_precision="ieee") * qk_scale
        else:
            qk = tl.dot(q, kT) * qk_scale
        if SOFTCAP:
            qk = _tanh(qk) * cap_log2e
        if MASK:
            valid = offs_n[None, :] < n_keys
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= qpos[:, None])
            if WINDOWED:
                valid = valid & (offs_n[None, :] > qpos[:, None] - sliding_window)
            qk = tl.where(valid, qk, NEG)
        bmax, barg = tl.max(qk, 1, return_indices=True)
        amax = tl.where(bmax > m_i, start_n + barg, amax)  # strict: the earliest block keeps ties
        m_new = tl.maximum(m_i, bmax)
        alpha = tl.math.exp2(m_i - m_new)
        t = qk - m_new[:, None]
        p = tl.math.exp2(t)
        if MASK:  # noqa: SIM102 -- nested constexpr ifs: each is resolved at compile time by triton.jit
            if WINDOWED:
                # a row may have no visible key in this block (m_new still NEG): exp2(0) must not count
                p = tl.where(valid, p, 0.0)
        # centred entropy update: uses the old l (order matters)
        a_i = alpha * (a_i + (m_i - m_new) * l_i) + tl.sum(p * t, 1)
        l_i = alpha * l_i + tl.sum(p, 1)
        sink = sink * alpha
        if start_n < first_k:
            sink += tl.sum(tl.where(offs_n[None, :] < first_k, p, 0.0), 1)
        local = local * alpha
        if (start_n + BLOCK_N > qpos_lo - window + 1) & (start_n <= qpos_hi):
            in_win = (offs_n[None, :] > qpos[:, None] - window) & (offs_n[None, :] <= qpos[:, None])
            local += tl.sum(tl.where(in_win, p, 0.0), 1)
        acc = acc * alpha[:, None]
        if DOT_FP32:
            acc += tl.dot(p, v, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, l_i, m_i, a_i, amax, sink, local


@triton.jit
def _pass_a_kernel(
    Q,
    K,
    V,
    O,
    LSE2,
    ENT,
    AMAX,
    PMAX,
    SINK,
    LOCAL,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_on,
    stride_od,
    n_heads,
    group,
    n_queries,
    n_keys,
    q_offset,
    qk_scale,
    first_k,
    window,
    sliding_window,
    cap_log2e,
    HEAD_DIM: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_FP32: tl.constexpr,
    WINDOWED: tl.constexpr,
    SOFTCAP: tl.constexpr,
):
    NEG: tl.constexpr = -1.0e30
    LN2: tl.constexpr = 0.6931471805599453
    start_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // n_heads
    h = bh % n_heads
    hk = h // group

    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    qpos = q_offset + offs_m
    qpos_lo = q_offset + start_m * BLOCK_M
    qpos_hi = qpos_lo + BLOCK_M - 1

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=(offs_m[:, None] < n_queries) & (offs_d[None, :] < HEAD_DIM), other=0.0)
    if DOT_FP32:
        q = q.to(tl.float32)
    k_base = K + b * stride_kb + hk * stride_kh
    v_base = V + b * stride_vb + hk * stride_vh

    m_i = tl.full([BLOCK_M], NEG, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    a_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    sink = tl.zeros([BLOCK_M], dtype=tl.float32)
    local = tl.zeros([BLOCK_M], dtype=tl.float32)
    amax = tl.zeros([BLOCK_M], dtype=tl.int32)
    acc = tl.zeros([BLOCK_M, D_PAD], dtype=tl.float32)

    if CAUSAL:
        hi = tl.minimum(n_keys, qpos_hi + 1)
        split = tl.minimum((qpos_lo // BLOCK_N) * BLOCK_N, (hi // BLOCK_N) * BLOCK_N)
    else:
        hi = n_keys
        split = (n_keys // BLOCK_N) * BLOCK_N
    if WINDOWED:
        # blocks before the one holding key qpos_lo - W + 1 are outside every row's window: skipped;
        # blocks from the first one wholly inside the window of the tile's last row need no mask
        lo_w = (tl.maximum(qpos_lo - sliding_window + 1, 0) // BLOCK_N) * BLOCK_N
        full_lo = ((tl.maximum(qpos_hi - sliding_window + 1, 0) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N
        mid_lo = tl.minimum(tl.maximum(full_lo, lo_w), split)
        acc, l_i, m_i, a_i, amax, sink, local = _pass_a_inner(
            acc,
            l_i,
            m_i,
            a_i,
            amax,
            sink,
            local,
            q,
            k_base,
            v_base,
            stride_kn,
            stride_kd,
            stride_vn,
            stride_vd,
            offs_d,
            qpos,
            qpos_lo,
            qpos_hi,
            lo_w,
            mid_lo,
            n_keys,
            qk_scale,
            first_k,
            window,
            sliding_window,
            cap_log2e,
            HEAD_DIM,
            D_PAD,
            BLOCK_N,
            True,
            CAUSAL,
            DOT_FP32,
            WINDOWED,
            SOFTCAP,
        )
    else:
        mid_lo = 0
    # off-band blocks: every key visible to every row of the tile, no mask
    acc, l_i, m_i, a_i, amax, sink, local = _pass_a_inner(
        acc,
        l_i,
        m_i,
        a_i,
        amax,
        sink,
        local,
        q,
        k_base,
        v_base,
        stride_kn,
        stride_kd,
        stride_vn,
        stride_vd,
        offs_d,
        qpos,
        qpos_lo,
        qpos_hi,
        mid_lo,
        split,
        n_keys,
        qk_scale,
        first_k,
        window,
        sliding_window,
        cap_log2e,
        HEAD_DIM,
        D_PAD,
        BLOCK_N,
        False,
        CAUSAL,
        DOT_FP32,
        WINDOWED,
        SOFTCAP,
    )
    # diagonal band and ragged key end: masked
    acc, l_i, m_i, a_i, amax, sink, local = _pass_a_inner(
        acc,
        l_i,
        m_i,
        a_i,
        amax,
        sink,
        local,
        q,
        k_base,
        v_base,
        stride_kn,
        stride_kd,
        stride_vn,
        stride_vd,
        offs_d,
        qpos,
        qpos_lo,
        qpos_hi,
        split,
        hi,
        n_keys,
        qk_scale,
        first_k,
        window,
        sliding_window,
        cap_log2e,
        HEAD_DIM,
        D_PAD,
        BLOCK_N,
        True,
        CAUSAL,
        DOT_FP32,
        WINDOWED,
        SOFTCAP,
    )

    log2_l = tl.math.log2(l_i)
    inv_l = 1.0 / l_i
    row_mask = offs_m < n_queries
    stat_off = bh * n_queries + offs_m
    tl.store(LSE2 + stat_off, m_i + log2_l, mask=row_mask)
    tl.store(ENT + stat_off, (log2_l - a_i * inv_l) * LN2, mask=row_mask)
    tl.store(AMAX + stat_off, amax.to(tl.int64), mask=row_mask)
    tl.store(PMAX + stat_off, inv_l, mask=row_mask)
    tl.store(SINK + stat_off, sink * inv_l, mask=row_mask)
    tl.store(LOCAL + stat_off, local * inv_l, mask=row_mask)
    o = acc * inv_l[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od
    tl.store(o_ptrs, o.to(O.dtype.element_ty), mask=row_mask[:, None] & (offs_d[None, :] < HEAD_DIM))


# --------------------------------------------------------------------------------------------------
# pass B: key-major column statistics from the stored LSE
# --------------------------------------------------------------------------------------------------


@triton.jit
def _pass_b_inner(
    colsum,
    colmax,
    kT,
    offs_n,
    offs_d,
    q_base,
    stride_qn,
    stride_qd,
    lse_base,
    pool_base,
    lo,
    hi,
    n_queries,
    n_keys,
    q_offset,
    qk_scale,
    pool,
    n_ktiles,
    start_n,
    sliding_window,
    cap_log2e,
    HEAD_DIM: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    MASK: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_FP32: tl.constexpr,
    WINDOWED: tl.constexpr,
    SOFTCAP: tl.constexpr,
):
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_ptrs = q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd
        if MASK:
            q = tl.load(q_ptrs, mask=(offs_m[:, None] < n_queries) & (offs_d[None, :] < HEAD_DIM), other=0.0)
            lse2 = tl.load(lse_base + offs_m, mask=offs_m < n_queries, other=0.0)
        else:
            if HEAD_DIM == D_PAD:
                q = tl.load(q_ptrs)
            else:
                q = tl.load(q_ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
            lse2 = tl.load(lse_base + offs_m)
        if DOT_FP32:
            q = q.to(tl.float32)
            qk = tl.dot(q, kT, input_precision="ieee") * qk_scale
        else:
            qk = tl.dot(q, kT) * qk_scale
        if SOFTCAP:
            qk = _tanh(qk) * cap_log2e
        t = qk - lse2[:, None]
        if MASK:
            valid = (offs_m[:, None] < n_queries) & (offs_n[None, :] < n_keys)
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= q_offset + offs_m[:, None])
            if WINDOWED:
                valid = valid & (offs_n[None, :] > q_offset + offs_m[:, None] - sliding_window)
            t = tl.where(valid, t, float("-inf"))  # masked before exp2: no overflow, p = 0 exactly
        p = tl.math.exp2(t)
        colsum += tl.sum(p, 0)
        colmax = tl.maximum(colmax, tl.max(p, 0))
        # this program alone owns column start_n of the tile-pooled buffer: no atomics needed
        cell = pool_base + (start_m // pool) * n_ktiles + start_n
        tl.store(cell, tl.load(cell) + tl.sum(tl.sum(p, 1), 0))
    return colsum, colmax


@triton.jit
def _pass_b_kernel(
    Q,
    K,
    LSE2,
    COLSUM,
    COLMAX,
    POOLED,
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    n_heads,
    group,
    n_queries,
    n_keys,
    q_offset,
    qk_scale,
    pool,
    n_qblocks,
    n_ktiles,
    sliding_window,
    cap_log2e,
    HEAD_DIM: tl.constexpr,
    D_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_FP32: tl.constexpr,
    WINDOWED: tl.constexpr,
    SOFTCAP: tl.constexpr,
):
    start_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // n_heads
    h = bh % n_heads
    hk = h // group
    n0 = start_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)

    k_ptrs = K + b * stride_kb + hk * stride_kh + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd
    kT = tl.load(k_ptrs, mask=(offs_n[None, :] < n_keys) & (offs_d[:, None] < HEAD_DIM), other=0.0)
    if DOT_FP32:
        kT = kT.to(tl.float32)
    q_base = Q + b * stride_qb + h * stride_qh
    lse_base = LSE2 + bh * n_queries
    pool_base = POOLED + bh * n_qblocks * n_ktiles

    colsum = tl.zeros([BLOCK_N], dtype=tl.float32)
    colmax = tl.zeros([BLOCK_N], dtype=tl.float32)

    n_q_ceil = ((n_queries + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
    full_q = (n_queries // BLOCK_M) * BLOCK_M
    if CAUSAL:
        # first query tile containing a row that sees key n0; first tile whose rows all see key n0+BN-1
        lo = (tl.maximum(n0 - q_offset, 0) // BLOCK_M) * BLOCK_M
        mid = ((tl.maximum(n0 + BLOCK_N - 1 - q_offset, 0) + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
        lo = tl.minimum(lo, n_q_ceil)
        mid = tl.maximum(lo, tl.minimum(mid, n_q_ceil))
    else:
        lo = 0
        mid = 0
    full_q = tl.where(n0 + BLOCK_N > n_keys, 0, full_q)  # ragged key tile: everything masked
    if WINDOWED:
        # rows from n0 + W - q_offset on no longer see key n0: unmasked tiles end before that row, and
        # tiles from the one past row n0 + BN + W - 2 - q_offset (last row that sees key n0 + BN - 1) on
        # see nothing of this key tile: skipped
        w_full = (tl.maximum(n0 + sliding_window - q_offset, 0) // BLOCK_M) * BLOCK_M
        w_end = tl.maximum(n0 + BLOCK_N + sliding_window - 1 - q_offset, 0)
        w_end = tl.minimum(((w_end + BLOCK_M - 1) // BLOCK_M) * BLOCK_M, n_queries)
        full_q = tl.maximum(mid, tl.minimum(full_q, w_full))
        tail = full_q
        q_end = tl.maximum(tail, w_end)
    else:
        tail = tl.maximum(mid, full_q)
        q_end = n_queries
    colsum, colmax = _pass_b_inner(
        colsum,
        colmax,
        kT,
        offs_n,
        offs_d,
        q_base,
        stride_qn,
        stride_qd,
        lse_base,
        pool_base,
        lo,
        mid,
        n_queries,
        n_keys,
        q_offset,
        qk_scale,
        pool,
        n_ktiles,
        start_n,
        sliding_window,
        cap_log2e,
        HEAD_DIM,
        D_PAD,
        BLOCK_M,
        True,
        CAUSAL,
        DOT_FP32,
        WINDOWED,
        SOFTCAP,
    )
    colsum, colmax = _pass_b_inner(
        colsum,
        colmax,
        kT,
        offs_n,
        offs_d,
        q_base,
        stride_qn,
        stride_qd,
        lse_base,
        pool_base,
        mid,
        full_q,
        n_queries,
        n_keys,
        q_offset,
        qk_scale,
        pool,
        n_ktiles,
        start_n,
        sliding_window,
        cap_log2e,
        HEAD_DIM,
        D_PAD,
        BLOCK_M,
        False,
        CAUSAL,
        DOT_FP32,
        WINDOWED,
        SOFTCAP,
    )
    colsum, colmax = _pass_b_inner(
        colsum,
        colmax,
        kT,
        offs_n,
        offs_d,
        q_base,
        stride_qn,
        stride_qd,
        lse_base,
        pool_base,
        tail,
        q_end,
        n_queries,
        n_keys,
        q_offset,
        qk_scale,
        pool,
        n_ktiles,
        start_n,
        sliding_window,
        cap_log2e,
        HEAD_DIM,
        D_PAD,
        BLOCK_M,
        True,
        CAUSAL,
        DOT_FP32,
        WINDOWED,
        SOFTCAP,
    )
    key_mask = offs_n < n_keys
    tl.store(COLSUM + bh * n_keys + offs_n, colsum, mask=key_mask)
    tl.store(COLMAX + bh * n_keys + offs_n, colmax, mask=key_mask)


# --------------------------------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------------------------------


def _d_pad(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _dot_fp32(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 or is_interpreting()


def _default_a_config(d_pad: int, dtype: torch.dtype, windowed: bool = False):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for pass A.

    GPU choices were checked by compiling for sm_90 with the bundled ptxas (no register spills for
    fp16/bf16 at head dims 64 and 128); they are not tuned on hardware here. The windowed kernel has a
    third (masked) loop instance; at 128x64 it spilled 16 bytes at D=128, 128x32 does not.
    """
    if is_interpreting():
        return 64, 64, 4, 1
    if dtype == torch.float32:  # ieee fp32 dots run on FMA units: small tiles
        return 32, 32, 4, 2
    if windowed:
        return 128, 32, 8, 3
    return 128, 64, 8, 3


def _largest_pow2_divisor(n: int, cap: int) -> int:
    b = 1
    while b * 2 <= cap and n % (b * 2) == 0:
        b *= 2
    return b


def _default_b_config(pool: int, d_pad: int, dtype: torch.dtype):
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) for pass B; both blocks divide ``pool``."""
    blk = _largest_pow2_divisor(pool, 64)
    if blk < 16:
        raise ValueError(
            f"the triton backend needs pool to be a multiple of 16 (block sizes must divide it and be "
            f">= 16), got pool={pool}; use pool in (16, 32, 64, 128, 256, ...) or backend='torch'"
        )
    if is_interpreting():
        return blk, blk, 4, 1
    if dtype == torch.float32:
        return min(blk, 32), min(blk, 32), (4 if d_pad <= 64 else 8), 2
    return blk, blk, 4, 3


def _launch_kwargs(num_warps: int, num_stages: int) -> dict:
    if is_interpreting():
        return {}
    return {"num_warps": num_warps, "num_stages": num_stages}


def _score_scales(scale: float, softcap: float | None) -> tuple[float, float]:
    """(qk_scale, cap_log2e): without a cap the scores go to base 2 at once; with one, after the tanh."""
    if softcap is None:
        return float(scale) * _LOG2E, 1.0
    return float(scale) / float(softcap), float(softcap) * _LOG2E


def pass_a(
    q,
    k,
    v,
    *,
    scale,
    causal,
    q_offset,
    first_k,
    window,
    sliding_window=None,
    softcap=None,
    block_m=None,
    block_n=None,
    num_warps=None,
    num_stages=None,
):
    """Run pass A. Returns ``(out, lse2, entropy, argmax, pmax, first_k_mass, window_mass)``.

    ``lse2`` is the base-2 LSE ``[B*Hq, Nq]`` (float32) that pass B consumes; the others are ``[B, Hq, Nq]``.
    """
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    d_pad = _d_pad(d)
    bm0, bn0, w0, s0 = _default_a_config(d_pad, q.dtype, windowed=sliding_window is not None)
    bm, bn = block_m or bm0, block_n or bn0
    if bm < 16 or bn < 16:
        raise ValueError(f"block sizes must be >= 16 (tl.dot minimum), got {bm}x{bn}")
    dev = q.device
    out = torch.empty(b, hq, nq, d, dtype=q.dtype, device=dev)
    lse2 = torch.empty(b * hq, nq, dtype=torch.float32, device=dev)
    ent = torch.empty(b, hq, nq, dtype=torch.float32, device=dev)
    amax = torch.empty(b, hq, nq, dtype=torch.int64, device=dev)
    pmax = torch.empty_like(ent)
    sink = torch.empty_like(ent)
    local = torch.empty_like(ent)
    # clamp so huge user values stay within int32 in the kernel
    first_k = min(int(first_k), nk + 1)
    window = min(int(window), q_offset + nq + 1)
    sw = min(int(sliding_window), q_offset + nq + 1) if sliding_window is not None else 0
    qk_scale, cap_log2e = _score_scales(scale, softcap)
    grid = (triton.cdiv(nq, bm), b * hq)
    _pass_a_kernel[grid](
        q,
        k,
        v,
        out,
        lse2,
        ent,
        amax,
        pmax,
        sink,
        local,
        *q.stride(),
        *k.stride(),
        *v.stride(),
        *out.stride(),
        hq,
        hq // hkv,
        nq,
        nk,
        int(q_offset),
        qk_scale,
        first_k,
        window,
        sw,
        cap_log2e,
        HEAD_DIM=d,
        D_PAD=d_pad,
        BLOCK_M=bm,
        BLOCK_N=bn,
        CAUSAL=bool(causal),
        DOT_FP32=_dot_fp32(q.dtype),
        WINDOWED=sliding_window is not None,
        SOFTCAP=softcap is not None,
        **_launch_kwargs(num_warps or w0, num_stages or s0),
    )
    return out, lse2, ent, amax, pmax, sink, local


def pass_b(
    q,
    k,
    lse2,
    *,
    scale,
    causal,
    q_offset,
    pool,
    sliding_window=None,
    softcap=None,
    block_m=None,
    block_n=None,
    num_warps=None,
    num_stages=None,
):
    """Run pass B from the base-2 LSE of pass A. Returns ``(col_sum, col_max, pooled)``."""
    b, hq, nq, d = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    d_pad = _d_pad(d)
    bm0, bn0, w0, s0 = _default_b_config(pool, d_pad, q.dtype)
    bm, bn = block_m or bm0, block_n or bn0
    if bm < 16 or bn < 16 or pool % bm or pool % bn:
        raise ValueError(f"pass B blocks must be >= 16 and divide pool={pool}, got {bm}x{bn}")
    dev = q.device
    col_sum = torch.empty(b, hq, nk, dtype=torch.float32, device=dev)
    col_max = torch.empty_like(col_sum)
    n_qblocks = triton.cdiv(nq, pool)
    n_ktiles = triton.cdiv(nk, bn)
    tiles = torch.zeros(b * hq, n_qblocks, n_ktiles, dtype=torch.float32, device=dev)
    grid = (n_ktiles, b * hq)
    sw = min(int(sliding_window), q_offset + nq + 1) if sliding_window is not None else 0
    qk_scale, cap_log2e = _score_scales(scale, softcap)
    _pass_b_kernel[grid](
        q,
        k,
        lse2,
        col_sum,
        col_max,
        tiles,
        *q.stride(),
        *k.stride(),
        hq,
        hq // hkv,
        nq,
        nk,
        int(q_offset),
        qk_scale,
        int(pool),
        n_qblocks,
        n_ktiles,
        sw,
        cap_log2e,
        HEAD_DIM=d,
        D_PAD=d_pad,
        BLOCK_M=bm,
        BLOCK_N=bn,
        CAUSAL=bool(causal),
        DOT_FP32=_dot_fp32(q.dtype),
        WINDOWED=sliding_window is not None,
        SOFTCAP=softcap is not None,
        **_launch_kwargs(num_warps or w0, num_stages or s0),
    )
    # sum groups of pool // bn key tiles into pooled key blocks
    r = pool // bn
    n_kblocks = triton.cdiv(nk, pool)
    if n_kblocks * r != n_ktiles:
        tiles = torch.nn.functional.pad(tiles, (0, n_kblocks * r - n_ktiles))
    pooled = tiles.view(b, hq, n_qblocks, n_kblocks, r).sum(-1)
    return col_sum, col_max, pooled


def triton_attention_with_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    causal: bool = True,
    q_offset: int = 0,
    first_k: int = 1,
    window: int = 16,
    columns: bool = True,
    pool: int = 64,
    check: bool = True,
    block_m: int | None = None,
    block_n: int | None = None,
    block_m_b: int | None = None,
    block_n_b: int | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
):
    """Same contract as :func:`workbench.kernels.attention_with_stats` with ``backend="triton"``.

    ``block_*`` override the tile sizes (tests and tuning); ``*_b`` are pass B's.
    """
    sh = check_inputs(
        q,
        k,
        v,
        scale=scale,
        causal=causal,
        q_offset=q_offset,
        first_k=first_k,
        window=window,
        pool=pool,
        check_finite=check,
        sliding_window=sliding_window,
        softcap=softcap,
    )
    if q.dtype == torch.float64:
        raise ValueError("the triton backend takes float16/bfloat16/float32 inputs, got float64")
    if not q.is_cuda and not is_interpreting():
        raise ValueError(
            f"the triton backend needs CUDA tensors (got device {q.device}); set TRITON_INTERPRET=1 "
            f"before importing triton to run it on CPU (slow), or use backend='torch'"
        )
    if columns:
        _default_b_config(pool, _d_pad(sh.head_dim), q.dtype)  # raises for a pool the kernel can't do
    q_offset = int(q_offset)
    guard = torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext()
    with torch.no_grad(), guard:  # launch on q's GPU, not whichever is current
        q_, k_, v_ = q.detach(), k.detach(), v.detach()
        out, lse2, ent, amax, pmax, sink, local = pass_a(
            q_,
            k_,
            v_,
            scale=scale,
            causal=causal,
            q_offset=q_offset,
            first_k=first_k,
            window=window,
            sliding_window=sliding_window,
            softcap=softcap,
            block_m=block_m,
            block_n=block_n,
        )
        col_sum = col_max = pooled = None
        if columns:
            col_sum, col_max, pooled = pass_b(
                q_,
                k_,
                lse2,
                scale=scale,
                causal=causal,
                q_offset=q_offset,
                pool=pool,
                sliding_window=sliding_window,
                softcap=softcap,
                block_m=block_m_b,
                block_n=block_n_b,
            )
        lse = (lse2 * _LN2).view(sh.batch, sh.n_q_heads, sh.n_queries)
    stats = AttentionStats(
        lse=lse,
        entropy=ent,
        argmax=amax,
        pmax=pmax,
        first_k_mass=sink,
        window_mass=local,
        col_sum=col_sum,
        col_max=col_max,
        pooled=pooled,
        n_keys=sh.n_keys,
        q_offset=q_offset,
        causal=bool(causal),
        first_k=int(first_k),
        window=int(window),
        pool=int(pool),
        sliding_window=None if sliding_window is None else int(sliding_window),
        softcap=None if softcap is None else float(softcap),
    )
    return out, stats
