"""Edits of the attention pattern of chosen heads: the causal checks of the sink family.

Remove a key from a head's view and give its mass back to the other keys, or calibrate hidden sinks as
in ACT (Yu et al., ICML 2024). Two forms of each:

* kernel-side edits (`removal_edits`, `act_edits`: `workbench.kernels.HeadEdit` descriptions the
  instrumented core applies while it computes attention; no N x N tensor, any length, one head per
  batch row if asked). The sink family runs its checks this way (`workbench.analysis.sinks`).
* eager pattern hooks (`edited_patterns`, `act_calibrated`): the bridge's full pattern, edited by the
  dense functions `remove_keys` / `act_calibrate`; prompts of a few thousand tokens at most. They are
  the references the kernel path is tested against. ACT's dense and kernel forms share one row rule
  (`workbench.kernels.edits.act_reweight`) and one sink rule (`act_sink_mask`).

Hooks are always removed on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workbench.errors import InputDataError
from workbench.kernels import HeadEdit
from workbench.kernels.edits import act_reweight
from workbench.models.heads import Head, HeadLike, parse_heads
from workbench.models.hooks import edits_paused, temporary_hooks
from workbench.models.model import Model

PatternEdit = Callable[[torch.Tensor], torch.Tensor]  # [B, Nq, Nk] -> same, rows summing to 1


def remove_keys(pattern: torch.Tensor, keys: torch.Tensor | list[int]) -> torch.Tensor:
    """Zero the given key columns and renormalise each row over the remaining keys.

    A row whose remaining attention is exactly zero (it looked only at removed keys and the
    rest underflowed) gets uniform attention over its remaining visible keys; rows that could
    only see removed keys (query 0 when key 0 is removed) are left as they were.
    """
    nq, nk = pattern.shape[-2:]
    keep = torch.ones(nk, dtype=torch.bool, device=pattern.device)
    keep[torch.as_tensor(keys, device=pattern.device, dtype=torch.long)] = False
    kept = pattern * keep
    total = kept.sum(-1, keepdim=True)
    visible = torch.ones(nq, nk, dtype=torch.bool, device=pattern.device).tril(nk - nq) & keep
    uniform = visible.to(pattern.dtype) / visible.sum(-1, keepdim=True).clamp_min(1)
    edited = torch.where(total > 0, kept / total.clamp_min(1e-38), uniform.expand_as(pattern))
    return torch.where(visible.any(-1, keepdim=True), edited, pattern)


def _visible(nq: int, nk: int, device, sliding_window: int | None = None) -> torch.Tensor:
    """[Nq, Nk] keys each query can see (the queries are the last Nq positions), windows counted."""
    i = torch.arange(nq, device=device)[:, None] + (nk - nq)
    j = torch.arange(nk, device=device)[None, :]
    vis = j <= i
    if sliding_window is not None:
        vis = vis & (j > i - sliding_window)
    return vis


#: which keys ACT calibrates: "act" is ACT's own rule (Yu et al. 2024, its code: mean received attention
#: > tau, the first detected sink spared); "guarded" also needs the key seen by >= min_query_share of the
#: queries (the workbench's hidden-sink rule, `workbench.analysis.sinks.sink_positions`)
ACT_SINK_RULES = ("act", "guarded")


def act_query_share(sink_rule: str, min_query_share: float = 0.25) -> float:
    """The visibility share a sink needs under ``sink_rule`` (0 for ACT's own rule)."""
    if sink_rule not in ACT_SINK_RULES:
        raise InputDataError(f"unknown ACT sink rule {sink_rule!r}", f"use one of {', '.join(ACT_SINK_RULES)}")
    return 0.0 if sink_rule == "act" else min_query_share


def act_sink_mask(
    col_mean: torch.Tensor, seen: torch.Tensor, n_queries: int, tau: float = 0.1, min_query_share: float = 0.0
) -> torch.Tensor:
    """ACT's sink set as a boolean mask [..., Nk], from column means [..., Nk] over the ``seen`` [Nk]
    queries that see each key: keys with mean received attention > tau (and, when ``min_query_share`` >
    0, seen by that share of the ``n_queries``: the guarded rule), minus ACT's *first detected* sink
    (``indices[1:]`` in its code: the first key above tau, usually key 0, but not always), which ACT
    leaves alone. The one definition the dense calibration and the kernel-side edits both use."""
    act_set = col_mean > tau
    sinks = act_set & (seen >= min_query_share * n_queries) if min_query_share > 0 else act_set
    first = act_set.to(torch.int8).argmax(-1)  # ACT's first detected sink, spared
    spare = torch.zeros_like(sinks).scatter_(-1, first[..., None], act_set.any(-1, keepdim=True))
    return sinks & ~spare


def act_calibrate(
    pattern: torch.Tensor,
    beta: float = 0.4,
    tau: float = 0.1,
    min_query_share: float = 0.0,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """ACT calibration of one head's causal pattern [B, Nq, Nk] (the dense reference of the kernel edit).

    Sinks S: `act_sink_mask` of the pattern's own column means (ACT's rule by default; ``min_query_share``
    > 0 is the workbench's guarded rule). Attention on S is scaled by beta; the freed mass (1 - beta) *
    sum_S goes to the other keys of the row in proportion to their attention (`act_reweight`), so rows
    still sum to 1.
    """
    b, nq, nk = pattern.shape
    vis = _visible(nq, nk, pattern.device, sliding_window)
    seen = vis.sum(0).to(pattern.dtype)  # queries that see key j
    col_mean = pattern.sum(-2) / seen.clamp_min(1)  # [B, Nk]
    sinks = act_sink_mask(col_mean, seen, nq, tau, min_query_share)
    return act_reweight(pattern, sinks[:, None, :], vis, beta)


def act_edits(
    sink_sets: Mapping[Head, Sequence[int]], beta: float = 0.4, rows: Mapping[Head, Sequence[int]] | None = None
) -> dict[int, list[HeadEdit]]:
    """Kernel-side ACT edits ({layer: [HeadEdit]}) for heads whose sink sets (already without the spared
    sink) were found on a recorded pass; heads with an empty set get no edit (ACT leaves them as they
    are). ``rows``: the batch rows each head's edit applies to (all rows when absent)."""
    edits: dict[int, list[HeadEdit]] = {}
    for head, keys in sink_sets.items():
        if not keys:
            continue
        on = None if rows is None else tuple(int(r) for r in rows[head])
        edits.setdefault(head.layer, []).append(
            HeadEdit(head=head.head, rows=on, act_sinks=tuple(int(j) for j in keys), act_beta=beta)
        )
    return edits


def removal_edits(removed: Mapping[Head, Sequence[int]], rows: Sequence[int] | None = None) -> dict[int, list[HeadEdit]]:
    """Kernel-side key removal ({layer: [HeadEdit]}): each head loses its keys (mass renormalised, as
    `remove_keys`), on the given batch rows (all when None); heads with no keys get no edit."""
    edits: dict[int, list[HeadEdit]] = {}
    on = None if rows is None else tuple(int(r) for r in rows)
    for head, keys in removed.items():
        if keys:
            edits.setdefault(head.layer, []).append(HeadEdit(head=head.head, rows=on, removed=tuple(int(j) for j in keys)))
    return edits


def act_layers(n_layers: int, skip_first: int = 2, skip_last: int = 1) -> list[int]:
    """The layers ACT calibrates: its code uses layers 2..30 of 32-layer models (never the first
    two nor the last)."""
    return list(range(min(skip_first, n_layers), max(n_layers - skip_last, 0)))


@dataclass(frozen=True)
class HeadPatternEdit:
    heads: tuple[Head, ...]
    edit: PatternEdit


@contextlib.contextmanager
def edited_patterns(model: Model, heads: Iterable[HeadLike], edit: PatternEdit) -> Iterator[None]:
    """Apply ``edit`` to the post-softmax pattern of each chosen head while the block runs."""
    geo = model.geometry
    chosen = parse_heads(list(heads), geo.n_layers, geo.n_heads)
    by_layer: dict[int, list[int]] = {}
    for head in chosen:
        by_layer.setdefault(head.layer, []).append(head.head)
    points = []
    for layer, head_ids in by_layer.items():

        def hook(pattern: torch.Tensor, hook: Any, head_ids: list[int] = head_ids) -> torch.Tensor:
            if edits_paused(model.bridge):
                return pattern
            out = pattern.clone()
            for h in head_ids:
                out[:, h] = edit(pattern[:, h].float()).to(pattern.dtype)
            return out

        points.append((model.bridge.blocks[layer].attn.hook_pattern, hook))
    with temporary_hooks(points):
        yield


@contextlib.contextmanager
def removed_first_token(model: Model, heads: Iterable[HeadLike], n_first: int = 1) -> Iterator[None]:
    """Context: chosen heads cannot attend to the first ``n_first`` tokens (mass renormalised): a pattern
    hook on the eager path, a kernel edit under the instrumented core (any length, cached decoding)."""
    from workbench.interventions.kernel_edits import kernel_edits
    from workbench.kernels import HeadEdit

    geo = model.geometry
    chosen = parse_heads(list(heads), geo.n_layers, geo.n_heads)
    edits: dict[int, list[HeadEdit]] = {}
    for h in chosen:
        edits.setdefault(h.layer, []).append(HeadEdit(head=h.head, removed=tuple(range(n_first))))
    with (
        edited_patterns(model, chosen, lambda p: remove_keys(p, list(range(n_first)))),
        kernel_edits(model, edits, eager_too=True),
    ):
        yield


@contextlib.contextmanager
def act_calibrated(
    model: Model,
    heads: Iterable[HeadLike],
    beta: float = 0.4,
    tau: float = 0.1,
    sink_rule: str = "act",
    min_query_share: float = 0.25,
) -> Iterator[None]:
    """Context: ACT calibration on the hidden sinks of the chosen heads (each layer's window counted),
    found by ``sink_rule`` (`ACT_SINK_RULES`: ACT's own by default; ``min_query_share`` is the
    guarded rule's share)."""
    from workbench.models.attention_spec import layer_windows

    min_query_share = act_query_share(sink_rule, min_query_share)
    geo = model.geometry
    chosen = parse_heads(list(heads), geo.n_layers, geo.n_heads)
    windows = layer_windows(model.hf_model.config, geo.n_layers)
    with contextlib.ExitStack() as stack:
        for layer in sorted({h.layer for h in chosen}):

            def edit(p, _w=windows[layer]):
                return act_calibrate(p, beta=beta, tau=tau, min_query_share=min_query_share, sliding_window=_w)

            stack.enter_context(edited_patterns(model, [h for h in chosen if h.layer == layer], edit))
        yield
