"""Relative-offset ("slash") profile of attention, from the LSE, in O(N x max_offset) memory."""

from __future__ import annotations

import torch

__all__ = ["offset_profile"]


def offset_profile(
    q: torch.Tensor,
    k: torch.Tensor,
    lse: torch.Tensor,
    *,
    scale: float,
    max_offset: int,
    q_offset: int = 0,
    chunk: int = 256,
) -> torch.Tensor:
    """Mean attention probability at each relative offset ``r`` (key = query position - r).

    ``q`` ``[B, Hq, Nq, D]``, ``k`` ``[B, Hkv, Nk, D]`` (query head ``h`` uses kv head ``h // (Hq // Hkv)``),
    ``lse`` ``[B, Hq, Nq]`` the natural-log LSE from ``attention_with_stats`` for the same q, k, scale.
    Query ``i`` sits at position ``q_offset + i``; for offset ``r`` its probability is
    ``exp(scale * q_i . k_{q_offset+i-r} - lse_i)``. Queries whose key ``q_offset + i - r`` falls outside
    ``[0, Nk)`` are left out of the mean for that ``r``; an offset no query has gives 0.

    Returns float32 ``[B, Hq, max_offset]``. Works on query chunks: per chunk it multiplies against the band of
    ``chunk + max_offset - 1`` keys the chunk can reach, so memory is O(chunk x (chunk + max_offset)).
    Note: the probabilities are those of the causal attention only if the LSE came from a causal call.
    """
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be 4-D, got {tuple(q.shape)} and {tuple(k.shape)}")
    b, hq, nq, d = q.shape
    bk, hkv, nk, dk = k.shape
    if bk != b or dk != d:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} disagree on batch or head dim")
    if hkv < 1 or hq % hkv:
        raise ValueError(f"Hq={hq} must be a multiple of Hkv={hkv}")
    if tuple(lse.shape) != (b, hq, nq):
        raise ValueError(f"lse must have shape {(b, hq, nq)}, got {tuple(lse.shape)}")
    if int(max_offset) != max_offset or max_offset < 1:
        raise ValueError(f"max_offset must be a positive integer, got {max_offset!r}")
    if int(q_offset) != q_offset or q_offset < 0:
        raise ValueError(f"q_offset must be a non-negative integer, got {q_offset!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    R, q_offset, chunk = int(max_offset), int(q_offset), int(chunk)
    g = hq // hkv
    dev = q.device
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    total = torch.zeros(b, hkv, g, R, dtype=torch.float64, device=dev)
    count = torch.zeros(R, dtype=torch.float64, device=dev)
    r = torch.arange(R, device=dev)
    with torch.no_grad():
        qg = q.detach().unflatten(1, (hkv, g))
        lg = lse.detach().to(acc).unflatten(1, (hkv, g))
        for i0 in range(0, nq, chunk):
            i1 = min(nq, i0 + chunk)
            c = i1 - i0
            pos = torch.arange(q_offset + i0, q_offset + i1, device=dev)  # [c]
            lo = max(0, q_offset + i0 - R + 1)
            hi = min(nk, q_offset + i1)
            if hi <= lo:
                continue
            kb = k.detach()[:, :, lo:hi].to(acc)  # [B, Hkv, W, D]
            qc = qg[:, :, :, i0:i1].to(acc).reshape(b, hkv, g * c, d)
            s = torch.matmul(qc, kb.transpose(-1, -2)).view(b, hkv, g, c, hi - lo)
            key = pos[:, None] - r[None, :]  # [c, R] absolute key index
            valid = (key >= 0) & (key < nk) & (key >= lo) & (key < hi)
            idx = (key - lo).clamp(0, hi - lo - 1)
            vals = torch.gather(s, -1, idx.expand(b, hkv, g, c, R))
            vals = torch.exp(vals * float(scale) - lg[:, :, :, i0:i1, None]) * valid
            total += vals.sum(-2, dtype=torch.float64)
            count += valid.sum(0, dtype=torch.float64)
    mean = torch.where(count > 0, total / count.clamp(min=1), torch.zeros_like(total))
    return mean.flatten(1, 2).to(torch.float32)
