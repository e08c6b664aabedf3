"""Float64 naive reference: materialises the full ``[B, Hq, Nq, Nk]`` softmax. Small N only.

This is the oracle the torch-chunked and Triton backends are tested against. It is written for
clarity, not speed: every statistic is computed directly from the dense probability matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._validate import check_inputs
from .edits import HeadEdit, act_reweight, check_edits, mask_scores, rows_of
from .stats import AttentionStats

__all__ = ["reference_attention_with_stats", "REFERENCE_MAX_ELEMENTS"]

# B * Hq * Nq * Nk above this (about 2 GiB of float64 per dense tensor) is refused.
REFERENCE_MAX_ELEMENTS = 1 << 28


def _key_masks(
    nq: int,
    nk: int,
    *,
    causal: bool,
    q_offset: int,
    first_k: int,
    window: int,
    device,
    sliding_window: int | None = None,
):
    qpos = torch.arange(nq, device=device)[:, None] + q_offset  # [Nq, 1]
    j = torch.arange(nk, device=device)[None, :]  # [1, Nk]
    visible = (j <= qpos) if causal else torch.ones(nq, nk, dtype=torch.bool, device=device)
    if sliding_window is not None:
        visible = visible & (j > qpos - int(sliding_window))
    sink = (j < first_k).expand(nq, nk)
    local = (j > qpos - window) & (j <= qpos)
    return visible, sink, local


def reference_attention_with_stats(
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
    return_probs: bool = False,
    stats_dtype: torch.dtype = torch.float32,
    sliding_window: int | None = None,
    softcap: float | None = None,
    edits: Sequence[HeadEdit] | None = None,
):
    """Dense float64 attention and statistics (same contract as ``attention_with_stats``).

    ``softcap`` maps each scaled score ``s`` to ``softcap * tanh(s / softcap)`` before masking (Gemma 2);
    ``sliding_window`` ``W`` hides keys ``j <= i - W`` from query ``i`` (Mistral, Gemma 2/3 local layers).

    With ``return_probs=True`` also returns the dense float64 probabilities ``[B, Hq, Nq, Nk]``.
    ``stats_dtype=torch.float64`` keeps the statistics in float64 (tests compare against those).
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
        sliding_window=sliding_window,
        softcap=softcap,
    )
    if sh.batch * sh.n_q_heads * sh.n_queries * sh.n_keys > REFERENCE_MAX_ELEMENTS:
        raise ValueError(
            f"the float64 reference materialises B*Hq*Nq*Nk = "
            f"{sh.batch * sh.n_q_heads * sh.n_queries * sh.n_keys} scores (limit {REFERENCE_MAX_ELEMENTS}); "
            f"use backend='torch' or 'triton' for long sequences"
        )
    g = sh.group
    q64 = q.detach().to(torch.float64)
    # Reference only: expand K/V to the query heads (the real backends index instead of copying).
    k64 = k.detach().to(torch.float64).repeat_interleave(g, dim=1)
    v64 = v.detach().to(torch.float64).repeat_interleave(g, dim=1)

    scores = torch.matmul(q64, k64.transpose(-1, -2)) * float(scale)  # [B, Hq, Nq, Nk]
    if softcap is not None:
        scores = float(softcap) * torch.tanh(scores / float(softcap))
    visible, sink, local = _key_masks(
        sh.n_queries,
        sh.n_keys,
        causal=causal,
        q_offset=q_offset,
        first_k=first_k,
        window=window,
        device=q.device,
        sliding_window=sliding_window,
    )
    scores = scores.masked_fill(~visible, float("-inf"))
    head_edits = check_edits(edits, sh.n_q_heads, sh.batch)
    qpos = torch.arange(sh.n_queries, device=q.device) + int(q_offset)
    kpos = torch.arange(sh.n_keys, device=q.device)
    for edit in head_edits:
        if edit.masks_scores:
            r = rows_of(edit, sh.batch)
            scores[r, edit.head] = mask_scores(scores[r, edit.head], edit, qpos, kpos, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    p = torch.exp(scores - lse[..., None])  # exactly 0 on masked cells
    for edit in head_edits:
        if edit.reweights:
            r = rows_of(edit, sh.batch)
            cols = torch.as_tensor([j for j in edit.act_sinks if j < sh.n_keys], dtype=torch.long)
            p[r, edit.head] = act_reweight(p[r, edit.head], cols, visible, edit.act_beta)
    out = torch.matmul(p, v64).to(q.dtype)

    entropy = torch.special.entr(p).sum(-1)
    argmax = torch.argmax(p, dim=-1)  # first maximal index on ties
    pmax = torch.gather(p, -1, argmax[..., None])[..., 0]
    first_k_mass = (p * sink).sum(-1)
    window_mass = (p * local).sum(-1)

    col_sum = col_max = pooled = None
    if columns:
        col_sum = p.sum(-2)
        col_max = p.amax(-2)
        nqb = -(-sh.n_queries // pool)
        nkb = -(-sh.n_keys // pool)
        padded = p.new_zeros(sh.batch, sh.n_q_heads, nqb * pool, nkb * pool)
        padded[..., : sh.n_queries, : sh.n_keys] = p
        pooled = padded.view(sh.batch, sh.n_q_heads, nqb, pool, nkb, pool).sum(dim=(3, 5))

    f32 = lambda t: t.to(stats_dtype)
    f32_or_none = lambda t: None if t is None else f32(t)
    stats = AttentionStats(
        lse=f32(lse),
        entropy=f32(entropy),
        argmax=argmax.to(torch.int64),
        pmax=f32(pmax),
        first_k_mass=f32(first_k_mass),
        window_mass=f32(window_mass),
        col_sum=f32_or_none(col_sum),
        col_max=f32_or_none(col_max),
        pooled=f32_or_none(pooled),
        n_keys=sh.n_keys,
        q_offset=int(q_offset),
        causal=bool(causal),
        first_k=int(first_k),
        window=int(window),
        pool=int(pool),
        sliding_window=None if sliding_window is None else int(sliding_window),
        softcap=None if softcap is None else float(softcap),
    )
    if return_probs:
        return out, stats, p
    return out, stats
