"""Argument checks shared by all backends (clear ValueErrors with the offending value)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class Shapes:
    batch: int
    n_q_heads: int
    n_kv_heads: int
    group: int
    n_queries: int
    n_keys: int
    head_dim: int


def check_inputs(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    causal: bool,
    q_offset: int,
    first_k: int,
    window: int,
    pool: int,
    check_finite: bool = True,
    sliding_window: int | None = None,
    softcap: float | None = None,
) -> Shapes:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D [batch, heads, tokens, head_dim], got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{name} must be float16/bfloat16/float32/float64, got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    b, hq, nq, d = q.shape
    bk, hkv, nk, dk = k.shape
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"k and v must have the same shape, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    if bk != b:
        raise ValueError(f"batch size differs: q has {b}, k/v have {bk}")
    if dk != d:
        raise ValueError(f"head dim differs: q has D={d}, k/v have D={dk}")
    if hkv < 1 or hq % hkv != 0:
        raise ValueError(f"number of query heads ({hq}) must be a multiple of the number of key/value heads ({hkv})")
    if nq < 1 or nk < 1:
        raise ValueError(f"empty sequence: {nq} queries and {nk} keys; both must be >= 1")
    if d < 1:
        raise ValueError(f"head dim must be >= 1, got {d}")
    if int(q_offset) != q_offset or q_offset < 0:
        raise ValueError(f"q_offset must be a non-negative integer, got {q_offset!r}")
    if causal and q_offset + nq > nk:
        raise ValueError(
            f"causal attention needs q_offset + Nq <= Nk (query i sits at position q_offset + i and "
            f"may only see keys up to it), got q_offset={q_offset}, Nq={nq}, Nk={nk}; pass all keys "
            f"up to the last query (chunked prefill: Nk = q_offset + Nq)"
        )
    if first_k < 0:
        raise ValueError(f"first_k must be >= 0, got {first_k}")
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    if sliding_window is not None and (int(sliding_window) != sliding_window or sliding_window < 1):
        raise ValueError(
            f"sliding_window must be a positive integer (query i sees keys i - W < j <= i) or None, got {sliding_window!r}"
        )
    if sliding_window is not None and not causal:
        raise ValueError("sliding_window needs causal=True (the window is defined relative to the query)")
    if softcap is not None:
        try:
            cap = float(softcap)
        except (TypeError, ValueError):
            raise ValueError(f"softcap must be a positive float or None, got {softcap!r}") from None
        if not (math.isfinite(cap) and cap > 0):
            raise ValueError(f"softcap must be a positive finite float or None, got {softcap!r}")
    try:
        scale_f = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a float, got {scale!r}") from None
    if not math.isfinite(scale_f):
        raise ValueError(f"scale must be finite, got {scale!r}")
    if check_finite:
        for name, t in (("q", q), ("k", k), ("v", v)):
            # One cheap reduction first: a NaN/Inf anywhere makes the float32 sum non-finite.
            if bool(torch.isfinite(t.sum(dtype=torch.float32 if t.dtype != torch.float64 else None))):
                continue
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                n_nan = int(torch.isnan(t).sum())
                n_inf = int(bad.sum()) - n_nan
                raise ValueError(
                    f"{name} contains non-finite values ({n_nan} NaN, {n_inf} Inf) of {t.numel()}; "
                    f"attention statistics would be NaN. Check the model activations (overflow in "
                    f"float16?) before calling attention_with_stats"
                )
    return Shapes(b, hq, hkv, hq // hkv, nq, nk, d)
