"""Per-head attention edits applied inside the kernel: sparse descriptions, never an N x N mask.

The causal checks of the families change what chosen heads attend to. On the bridge's eager path
they were hooks on the full pattern; here each is a small description the chunked kernel applies to
the scores or probabilities of the query chunk it holds anyway, in a prefill and in a cached decode
step alike (positions are absolute: query ``q_offset + i``, key ``j``):

* ``removed``: keys hidden from the head, their mass renormalised over the rest (the first-token and
  hidden-sink removal checks). A query that could see only removed keys keeps its row, as the eager
  `remove_keys` does.
* ``stream``: ``(sink, recent)``, StreamingLLM's cache: the head sees keys ``j < sink`` and
  ``q - j < recent`` only (KV budgets, DuoAttention-style streaming heads).
* ``act_sinks``: ACT's calibration (Yu et al. 2024): attention on these keys is scaled by ``act_beta``
  and the freed mass is given to the row's other keys in proportion to their attention (uniformly over
  the visible non-sink keys when they hold none). ACT's sink set comes from a recorded pass of the same
  prompt (column means), so it is given here, already without the sink ACT spares.

``rows`` restricts an edit to some batch rows: a batched sweep edits a different head in each row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["HeadEdit", "check_edits", "act_reweight"]


@dataclass(frozen=True)
class HeadEdit:
    head: int  # query head of the layer
    rows: tuple[int, ...] | None = None  # batch rows the edit applies to (None: every row)
    removed: tuple[int, ...] = ()  # absolute key positions hidden from the head
    stream: tuple[int, int] | None = None  # (sink, recent) window
    act_sinks: tuple[int, ...] = ()  # absolute key positions ACT scales by act_beta
    act_beta: float = 0.4

    @property
    def masks_scores(self) -> bool:
        return bool(self.removed) or self.stream is not None

    @property
    def reweights(self) -> bool:
        return bool(self.act_sinks)


def check_edits(edits: Sequence[HeadEdit] | None, n_q_heads: int, batch: int) -> tuple[HeadEdit, ...]:
    """Validate the edits of one layer against the shapes of the call (ValueError naming the problem)."""
    if not edits:
        return ()
    out = []
    for e in edits:
        if not isinstance(e, HeadEdit):
            raise ValueError(f"edits must be HeadEdit instances, got {type(e).__name__}")
        if not 0 <= e.head < n_q_heads:
            raise ValueError(f"edit of head {e.head}: the layer has {n_q_heads} query heads (use 0..{n_q_heads - 1})")
        if e.rows is not None and any(not 0 <= r < batch for r in e.rows):
            raise ValueError(f"edit of head {e.head}: rows {list(e.rows)} outside the batch of {batch}")
        if e.stream is not None and (e.stream[0] < 0 or e.stream[1] < 1):
            raise ValueError(f"edit of head {e.head}: stream window {e.stream} needs sink >= 0 and recent >= 1")
        if e.reweights and not 0.0 <= e.act_beta <= 1.0:
            raise ValueError(f"edit of head {e.head}: act_beta must be in [0, 1], got {e.act_beta}")
        if any(j < 0 for j in (*e.removed, *e.act_sinks)):
            raise ValueError(f"edit of head {e.head}: key positions must be >= 0")
        out.append(e)
    return tuple(out)


def _cols(positions: Iterable[int], klo: int, khi: int, device) -> torch.Tensor:
    idx = torch.as_tensor([j - klo for j in positions if klo <= j < khi], dtype=torch.long)
    return idx.to(device)


def mask_scores(s: torch.Tensor, edit: HeadEdit, qpos: torch.Tensor, kpos: torch.Tensor, neg: float) -> torch.Tensor:
    """Scores [R, C, K] of one head (already causal/window masked with ``neg``) with the edit's key masks.

    ``qpos`` [C] / ``kpos`` [K] are the absolute positions of the chunk's queries and keys.
    """
    if edit.stream is not None:
        sink, recent = edit.stream
        keep = (kpos[None, :] < sink) | (qpos[:, None] - kpos[None, :] < recent)
        s = s.masked_fill(~keep, neg)
    if edit.removed:
        cols = _cols(edit.removed, int(kpos[0]), int(kpos[-1]) + 1, s.device)
        if cols.numel():
            cand = s.clone()
            cand[..., cols] = neg
            # a row whose every remaining visible key is removed keeps its scores (eager remove_keys rule)
            alive = (cand > neg / 2).any(-1, keepdim=True)
            s = torch.where(alive, cand, s)
    return s


def act_reweight(p: torch.Tensor, sinks: torch.Tensor, visible: torch.Tensor, beta: float) -> torch.Tensor:
    """ACT on probability rows ``p`` [..., C, K]: the sink keys scaled by ``beta``, the freed mass
    shared over the other keys in proportion to their attention (uniformly over the visible non-sink keys
    when they hold none; a row with none keeps its pattern). Rows still sum to 1.

    ``sinks``: int64 column indices (the same keys for every row: the kernel's chunk of one head), or a
    boolean mask broadcastable to ``p`` (per-row sets: `workbench.interventions.attention_edits.act_calibrate`
    on a batch of dense patterns). The one implementation of ACT's row rule in the workbench.
    """
    if sinks.dtype == torch.bool:
        sm = sinks.to(p.dtype)
    else:
        sm = torch.zeros(p.shape[-1], dtype=p.dtype, device=p.device)
        sm[sinks] = 1.0
    on_sinks = (p * sm).sum(-1, keepdim=True)
    rest = p * (1 - sm)
    rest_total = rest.sum(-1, keepdim=True)
    freed = (1 - beta) * on_sinks
    # ACT shares the freed mass in proportion to the row's non-sink attention. When that is exactly zero
    # (a row entirely on sinks; ACT's formula divides 0 by 0) it is shared uniformly over the visible
    # non-sink keys instead
    fallback = visible.to(p.dtype) * (1 - sm)
    fallback_total = fallback.sum(-1, keepdim=True)
    share = torch.where(rest_total > 0, rest / rest_total.clamp_min(1e-38), fallback / fallback_total.clamp_min(1.0))
    edited = p * sm * beta + rest + freed * share
    movable = (rest_total > 0) | (fallback_total > 0)
    return torch.where(movable, edited, p)


def rows_of(edit: HeadEdit, batch: int) -> list[int]:
    return list(range(batch)) if edit.rows is None else sorted(set(edit.rows))
