"""Instrumented attention kernels (installed as ``workbench.kernels``).

One call gives the attention output and per-head statistics without an N x N tensor::

    from workbench.kernels import attention_with_stats
    out, stats = attention_with_stats(q, k, v, scale=hf_attn.scaling, causal=True)

Backends:

* ``"triton"``: two Triton kernels (pass A query-major with the output, pass B key-major column
  statistics from the stored LSE). Needs CUDA tensors, or ``TRITON_INTERPRET=1`` set before triton is
  imported (CPU interpreter, slow: tests only). ``pool`` must be a multiple of 16.
* ``"torch"``: chunked torch (CPU path; also runs on CUDA), O(N x chunk) memory.
* ``"reference"``: float64 dense oracle, small N only.
* ``"auto"``: ``"triton"`` for CUDA tensors when triton is installed and the arguments suit it
  (fp16/bf16/fp32, ``pool % 16 == 0``), otherwise ``"torch"``.

Chunked prefill: call once per query chunk with ``q_offset`` (keys ``0 .. q_offset + Nq - 1``) and merge the
chunks with :func:`merge_stats` / :class:`StatsAccumulator` (chunk lengths multiples of ``pool``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from .edits import HeadEdit
from .offsets import offset_profile
from .reference import reference_attention_with_stats
from .stats import AttentionStats, StatsAccumulator, column_count, merge_stats
from .torch_chunked import torch_attention_with_stats

__all__ = [
    "attention_with_stats",
    "AttentionStats",
    "HeadEdit",
    "StatsAccumulator",
    "merge_stats",
    "column_count",
    "offset_profile",
    "triton_available",
    "resolve_backend",
    "BACKENDS",
]

BACKENDS = ("auto", "triton", "torch", "reference")


def triton_available() -> bool:
    """True when the ``triton`` package can be imported (it is Linux-only)."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str, q: torch.Tensor, *, pool: int = 64) -> str:
    """The concrete backend ``attention_with_stats`` would use for ``q`` (see the module docstring)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not isinstance(q, torch.Tensor):
        raise ValueError(f"q must be a torch.Tensor, got {type(q).__name__}")
    if backend != "auto":
        return backend
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16, torch.float32) and pool % 16 == 0 and triton_available():
        return "triton"
    return "torch"


def attention_with_stats(
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
    backend: str = "auto",
    chunk: int = 256,
    sliding_window: int | None = None,
    softcap: float | None = None,
    edits: Any = None,
):
    """Attention output and per-head statistics.

    Args:
        q: ``[B, Hq, Nq, D]``; k, v: ``[B, Hkv, Nk, D]`` with ``Hq % Hkv == 0``; query head ``h`` uses kv head
            ``h // (Hq // Hkv)`` (no copy of K/V).
        scale: multiplies ``q . k`` (pass the model's scaling; it is not always ``D ** -0.5``).
        causal: query ``i`` (at position ``q_offset + i``) sees keys ``j <= q_offset + i``.
        q_offset: absolute position of query 0 (chunked prefill: ``Nk = q_offset + Nq``).
        first_k: ``first_k_mass`` is the mass on keys ``j < first_k`` (attention sinks).
        window: ``window_mass`` is the mass on keys ``q_pos - window < j <= q_pos``.
        columns: also compute ``col_sum``, ``col_max`` and ``pooled`` (pass B).
        pool: pooled-map block size (square blocks of query and key indices).
        backend: ``"auto"``, ``"triton"``, ``"torch"`` or ``"reference"``.
        chunk: query chunk of the torch backend (memory ~ ``B * Hq * chunk * Nk`` floats, twice).
        sliding_window: ``W`` hides keys ``j <= q_pos - W`` (Mistral, Gemma 2/3 local layers); ``None``
            for full causal attention. Key blocks wholly outside the window are skipped, so a windowed
            layer costs O(N x W).
        softcap: scores become ``softcap * tanh(scale * q.k / softcap)`` before masking (Gemma 2).
        edits: per-head :class:`HeadEdit` descriptions (removed keys, streaming windows, ACT reweighting)
            applied inside the kernel (see ``kernels/edits.py``). The torch and reference backends implement
            them; ``"auto"`` picks torch when there are edits, and ``"triton"`` refuses them.

    Returns:
        ``(out, stats)``: ``out`` ``[B, Hq, Nq, D]`` in ``q.dtype``; ``stats`` an :class:`AttentionStats`.
        Computed under ``torch.no_grad()``: there is no backward.

    Raises:
        ValueError: bad shapes, dtypes, ``q_offset + Nq > Nk`` when causal, NaN/Inf in the inputs,
            an unknown backend, or a backend that cannot run these inputs.
    """
    name = resolve_backend(backend, q, pool=pool)
    if edits:
        if backend == "triton":
            raise ValueError("the Triton kernels do not implement per-head edits yet; use backend='torch' (CPU or CUDA)")
        if name == "triton":
            name = "torch"
    kwargs: dict[str, Any] = dict(
        scale=scale,
        causal=causal,
        q_offset=q_offset,
        first_k=first_k,
        window=window,
        columns=columns,
        pool=pool,
        sliding_window=sliding_window,
        softcap=softcap,
    )
    if name == "torch":
        return torch_attention_with_stats(q, k, v, chunk=chunk, edits=edits, **kwargs)
    if name == "reference":
        return reference_attention_with_stats(q, k, v, edits=edits, **kwargs)
    if not triton_available():
        raise ValueError("backend='triton' needs the triton package (Linux); use backend='torch'")
    from .triton_attention import triton_attention_with_stats

    return triton_attention_with_stats(q, k, v, **kwargs)
