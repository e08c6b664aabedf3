"""Simulated KV-cache budgets: some heads keep the full cache, the others only sink + recent.

DuoAttention (Xiao et al. 2024) and RazorAttention (Tang et al. 2024) keep a full cache for
retrieval heads and a "streaming" cache (the first tokens plus a recent window) for the
rest. We simulate that exactly by masking, for each streaming head, every key that is
neither among the first ``sink`` tokens nor within ``recent`` tokens of the query
(StreamingLLM's window). Works on the bridge's pre-softmax scores (eager path).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from workbench.models.heads import Head, HeadLike, parse_head
from workbench.models.hooks import temporary_hooks


def streaming_mask(n_queries: int, n_keys: int, sink: int, recent: int, device=None) -> torch.Tensor:
    """Bool [Nq, Nk]: True where a streaming head may look (causal, sink or recent window)."""
    qpos = torch.arange(n_queries, device=device)[:, None] + (n_keys - n_queries)
    j = torch.arange(n_keys, device=device)[None, :]
    return (j <= qpos) & ((j < sink) | (qpos - j < recent))


@contextlib.contextmanager
def streaming_heads(model: Any, windows: Mapping[HeadLike, tuple[int, int]]) -> Iterator[None]:
    """Within the block, each head in ``windows`` sees only (sink, recent) keys."""
    geo = model.geometry
    by_layer: dict[int, dict[int, tuple[int, int]]] = {}
    for spec, window in windows.items():
        head = parse_head(spec, geo.n_layers, geo.n_heads)
        by_layer.setdefault(head.layer, {})[head.head] = (int(window[0]), int(window[1]))
    points = []
    for layer, heads in by_layer.items():

        def hook(scores: torch.Tensor, hook: Any, heads: dict[int, tuple[int, int]] = heads) -> torch.Tensor:
            out = scores.clone()
            nq, nk = scores.shape[-2:]
            for h, (sink, recent) in heads.items():
                keep = streaming_mask(nq, nk, sink, recent, scores.device)
                out[:, h] = out[:, h].masked_fill(~keep, torch.finfo(scores.dtype).min)
            return out

        points.append((model.bridge.blocks[layer].attn.hook_attn_scores, hook))
    with temporary_hooks(points):
        yield


def kv_budget(
    model: Any, full_heads: Iterable[HeadLike], sink: int = 4, recent: int = 64
):
    """Context: heads in ``full_heads`` keep the full cache; every other head streams."""
    geo = model.geometry
    keep = {parse_head(h, geo.n_layers, geo.n_heads) for h in full_heads}
    windows = {h: (sink, recent) for h in geo.all_heads() if h not in keep}
    return streaming_heads(model, windows)


def cache_fraction(n_tokens: int, n_full: int, n_total: int, sink: int, recent: int) -> float:
    """Share of the full KV cache kept when n_full of n_total heads keep everything."""
    streaming_size = min(n_tokens, sink + recent)
    return (n_full * n_tokens + (n_total - n_full) * streaming_size) / (n_total * n_tokens)


__all__ = ["Head", "cache_fraction", "kv_budget", "streaming_heads", "streaming_mask"]
