"""Simulated KV-cache budgets: some heads keep the full cache, the others only sink + recent.

DuoAttention (Xiao et al. 2024) and RazorAttention (Tang et al. 2024) keep a full cache for
retrieval heads and a "streaming" cache (the first tokens plus a recent window) for the
rest. We simulate that exactly by masking, for each streaming head, every key that is
neither among the first ``sink`` tokens nor within ``recent`` tokens of the query
(StreamingLLM's window). Works on the bridge's pre-softmax scores (eager path) and, under the
instrumented core, as kernel edits (any length, prefill and cached decoding alike).

Engines keep or drop the cache of a *KV head*: under GQA one query head on the full cache keeps
its whole KV head, so every query head of that KV head keeps everything, and a streaming KV head
streams all of its query heads. `kv_budget` and `cache_fraction` count that way. Choosing heads by
the retrieval score and masking them like this is "retrieval-score head selection with a
DuoAttention-style mask", not DuoAttention (which learns its gates).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from workbench.interventions.kernel_edits import kernel_edits
from workbench.kernels import HeadEdit
from workbench.models.heads import Head, HeadLike, parse_head
from workbench.models.hooks import edits_paused, temporary_hooks
from workbench.models.model import Model

#: the streaming heads' cache: StreamingLLM's 4 sink tokens and a recent window scaled to the short
#: contexts the workbench runs at by default (DuoAttention uses 64 + 256 on 7B models at 100k+ tokens)
STREAMING_SINK = 4
STREAMING_RECENT = 32


def streaming_mask(n_queries: int, n_keys: int, sink: int, recent: int, device=None) -> torch.Tensor:
    """Bool [Nq, Nk]: True where a streaming head may look (causal, sink or recent window)."""
    qpos = torch.arange(n_queries, device=device)[:, None] + (n_keys - n_queries)
    j = torch.arange(n_keys, device=device)[None, :]
    return (j <= qpos) & ((j < sink) | (qpos - j < recent))


@contextlib.contextmanager
def streaming_heads(model: Model, windows: Mapping[HeadLike, tuple[int, int]]) -> Iterator[None]:
    """Within the block, each head in ``windows`` sees only (sink, recent) keys."""
    geo = model.geometry
    by_layer: dict[int, dict[int, tuple[int, int]]] = {}
    for spec, window in windows.items():
        head = parse_head(spec, geo.n_layers, geo.n_heads)
        by_layer.setdefault(head.layer, {})[head.head] = (int(window[0]), int(window[1]))
    points = []
    for layer, heads in by_layer.items():

        def hook(scores: torch.Tensor, hook: Any, heads: dict[int, tuple[int, int]] = heads) -> torch.Tensor:
            if edits_paused(model.bridge):
                return scores
            out = scores.clone()
            nq, nk = scores.shape[-2:]
            for h, (sink, recent) in heads.items():
                keep = streaming_mask(nq, nk, sink, recent, scores.device)
                out[:, h] = out[:, h].masked_fill(~keep, torch.finfo(scores.dtype).min)
            return out

        points.append((model.bridge.blocks[layer].attn.hook_attn_scores, hook))
    # the same windows as kernel edits: under the instrumented core (long prompts, cached decoding) the
    # scores hook never fires and the core applies them instead, without an N x N mask
    edits = {layer: [HeadEdit(head=h, stream=window) for h, window in sorted(heads.items())] for layer, heads in by_layer.items()}
    with temporary_hooks(points), kernel_edits(model, edits, eager_too=True):
        yield


KvHead = tuple[int, int]  # (layer, KV head)


def kv_heads_of(model: Model, heads: Iterable[HeadLike]) -> set[KvHead]:
    """The KV heads that serve these query heads."""
    geo = model.geometry
    parsed = [parse_head(h, geo.n_layers, geo.n_heads) for h in heads]
    return {(h.layer, geo.kv_head(h.head)) for h in parsed}


def kv_budget(model: Model, full_heads: Iterable[HeadLike], sink: int = STREAMING_SINK, recent: int = STREAMING_RECENT):
    """Context: the KV heads serving ``full_heads`` keep the full cache (with every query head they
    serve); every other KV head streams, with all of its query heads."""
    return kv_budget_by_kv_heads(model, kv_heads_of(model, full_heads), sink, recent)


def kv_budget_by_kv_heads(
    model: Model, full_kv_heads: Iterable[KvHead], sink: int = STREAMING_SINK, recent: int = STREAMING_RECENT
):
    """Context: the given (layer, KV head) pairs keep the full cache; every other KV head streams."""
    found = streaming_windows(model.geometry, full_kv_heads, sink, recent)
    windows: dict[HeadLike, tuple[int, int]] = {h: w for h, w in found.items()}
    return streaming_heads(model, windows)


def streaming_windows(geo: Any, full_kv_heads: Iterable[KvHead], sink: int, recent: int) -> dict[Head, tuple[int, int]]:
    """{query head: (sink, recent)} for every query head whose KV head is not in ``full_kv_heads``."""
    keep = {(int(layer), int(kv)) for layer, kv in full_kv_heads}
    return {h: (sink, recent) for h in geo.all_heads() if (h.layer, geo.kv_head(h.head)) not in keep}


def row_streaming_edits(rows: Sequence[Mapping[Head, tuple[int, int]]]) -> dict[int, list[HeadEdit]]:
    """Kernel edits for a batched sweep: batch row ``r`` streams the heads of ``rows[r]`` with their
    windows, the other rows are untouched. One `HeadEdit` per (head, window), listing its rows."""
    grouped: dict[tuple[int, int, tuple[int, int]], list[int]] = {}
    for r, windows in enumerate(rows):
        for head, (sink, recent) in windows.items():
            grouped.setdefault((int(head.layer), int(head.head), (int(sink), int(recent))), []).append(r)
    edits: dict[int, list[HeadEdit]] = {}
    for (layer, q_head, window), where in sorted(grouped.items()):
        edits.setdefault(layer, []).append(HeadEdit(head=q_head, rows=tuple(where), stream=window))
    return edits


def cache_fraction(n_tokens: int, n_full: int, n_total: int, sink: int, recent: int) -> float:
    """Share of the full KV cache kept when n_full of n_total *KV heads* keep everything."""
    streaming_size = min(n_tokens, sink + recent)
    return (n_full * n_tokens + (n_total - n_full) * streaming_size) / (n_total * n_tokens)


def kv_head_scores(scores: Any, n_kv_heads: int, reduce: str = "max") -> Any:
    """[L, KV] score of each KV head from its query heads' scores ([L, H] array, query heads grouped
    in order), reduced by max (RazorAttention and DuoAttention keep a KV head when any of its query
    heads needs it) or mean; NaN scores count as lowest (-inf)."""
    import numpy as np

    if reduce not in ("max", "mean"):
        from workbench.errors import WorkbenchError

        raise WorkbenchError(f"unknown KV-head reduction {reduce!r}", "use max or mean")
    values = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    n_layers, n_heads = values.shape
    grouped = values.reshape(n_layers, n_kv_heads, n_heads // n_kv_heads)
    return grouped.max(-1) if reduce == "max" else grouped.mean(-1)


def rank_kv_heads(per_kv: Any) -> list[KvHead]:
    """(layer, KV head) pairs by descending score; ties keep the lower index first."""
    n_layers, n_kv = per_kv.shape
    return sorted(((l, k) for l in range(n_layers) for k in range(n_kv)), key=lambda lk: -per_kv[lk])


def kv_head_ranking(scores: Any, geo: Any, reduce: str = "max") -> list[KvHead]:
    """KV heads ranked by their query heads' scores (`kv_head_scores`, then `rank_kv_heads`)."""
    return rank_kv_heads(kv_head_scores(scores, geo.n_kv_heads, reduce))


def kv_ranking_from_heads(ranking: Iterable[HeadLike], geo: Any) -> list[KvHead]:
    """KV heads in the order of their best-ranked query head (the max reduction of a head ranking)."""
    out: list[KvHead] = []
    for spec in ranking:
        h = parse_head(spec, geo.n_layers, geo.n_heads)
        kv = (h.layer, geo.kv_head(h.head))
        if kv not in out:
            out.append(kv)
    return out


__all__ = [
    "Head",
    "KvHead",
    "cache_fraction",
    "kv_budget",
    "kv_budget_by_kv_heads",
    "kv_head_ranking",
    "kv_head_scores",
    "rank_kv_heads",
    "kv_heads_of",
    "row_streaming_edits",
    "streaming_windows",
    "kv_ranking_from_heads",
    "streaming_heads",
    "streaming_mask",
]
