"""Statistics from the bridge's own full attention pattern (the "eager" backend).

For short prompts where the full N x N pattern is wanted (pictures, pattern patching), the
bridge runs unchanged and we read ``hook_attn_scores`` and ``hook_pattern``; the statistics
are computed from them with the same definitions as the kernels, so records look alike.
"""

from __future__ import annotations

import torch

from workbench.kernels import AttentionStats


def stats_from_pattern(
    scores: torch.Tensor | None,
    pattern: torch.Tensor,
    *,
    first_k: int,
    window: int,
    columns: bool,
    pool: int,
    sliding_window: int | None = None,
    softcap: float | None = None,
) -> AttentionStats:
    """scores: masked pre-softmax scores [B, H, Nq, Nk] (causal, q_offset 0), or None when the bridge
    exposes only the pattern (then ``lse`` is NaN); pattern: the softmax of the scores."""
    p = pattern.float()
    b, h, nq, nk = p.shape
    if scores is None:
        lse = torch.full(p.shape[:-1], float("nan"), device=p.device)
    else:
        scores = scores.float()
        finite = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, float("-inf")))
        lse = torch.logsumexp(finite, dim=-1)
    entropy = torch.special.entr(p).sum(-1)
    pmax, argmax = p.max(dim=-1)
    qpos = torch.arange(nq, device=p.device)[:, None] + (nk - nq)
    j = torch.arange(nk, device=p.device)[None, :]
    local = (j > qpos - window) & (j <= qpos)
    first_k_mass = p[..., :first_k].sum(-1)
    window_mass = (p * local).sum(-1)
    col_sum = col_max = pooled = None
    if columns:
        col_sum = p.sum(-2)
        col_max = p.amax(-2)
        nbq, nbk = -(-nq // pool), -(-nk // pool)
        padded = torch.zeros(b, h, nbq * pool, nbk * pool, dtype=p.dtype, device=p.device)
        padded[..., :nq, :nk] = p
        pooled = padded.view(b, h, nbq, pool, nbk, pool).sum(dim=(3, 5))
    return AttentionStats(
        lse=lse,
        entropy=entropy,
        argmax=argmax.long(),
        pmax=pmax,
        first_k_mass=first_k_mass,
        window_mass=window_mass,
        col_sum=col_sum,
        col_max=col_max,
        pooled=pooled,
        n_keys=nk,
        q_offset=nk - nq,
        causal=True,
        first_k=first_k,
        window=window,
        pool=pool,
        sliding_window=sliding_window,
        softcap=softcap,
    )
