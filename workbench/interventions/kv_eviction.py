"""TAPPA's KV-cache eviction, simulated: a full prefill, then decoding against the kept keys only.

TAPPA (its KV path) is CAKE (Qin et al. 2025) with the per-layer preference replaced by
``1 - q_sim_l``, the post-RoPE query similarity of the prompt's last window. After a full prefill:

* each layer gets a budget ``B_l`` proportional to its preference (total fixed, each clipped to the
  prefix length, the excess spread over the other layers: CAKE's ``adjust_budgets``);
* inside a layer, each prefix key is scored by the attention of the last ``w`` (32) queries: mean plus
  ``gamma`` (200) times the variance over those queries, average-pooled along the keys (kernel 5),
  averaged over the query heads of each KV head; the top ``B_l`` prefix keys are kept, plus the last
  ``w`` keys.

Decoding then sees only the kept prompt keys (and every generated token). We simulate that on the
eager path: the prefill pass records the window's attention and queries, and `evicted_cache` masks
the evicted prompt keys for the queries after the prompt. Teacher-forced answers under that mask are
the answers the compressed cache would give.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.models.hooks import temporary_hooks
from workbench.models.model import Model


@dataclass(frozen=True)
class TappaConfig:
    """Defaults of TAPPA's released KV script (window 32, gamma 200, avg-pool kernel 5, alpha = inf)."""

    window: int = 32
    gamma: float = 200.0
    pool_kernel: int = 5


@dataclass
class PrefillView:
    """What the eviction needs from one prompt's prefill, per layer."""

    window_attention: list[torch.Tensor]  # [H, w, N] attention of the last w queries to every key
    window_queries: list[torch.Tensor]  # [H, w, D] their post-RoPE queries
    n_tokens: int


@torch.no_grad()
def prefill_view(model: Model, prompt: torch.Tensor, window: int) -> PrefillView:
    """Run the prompt once (full attention) and keep the last ``window`` rows of every layer."""
    geo = model.geometry
    attn: dict[int, torch.Tensor] = {}
    queries: dict[int, torch.Tensor] = {}
    points = []
    for layer, block in enumerate(model.bridge.blocks):
        q_point = getattr(block.attn, "hook_rot_q", None) or block.attn.hook_q

        def grab_p(t: torch.Tensor, hook: Any, layer: int = layer) -> None:
            attn[layer] = t[0, :, -window:].detach().double().cpu()

        def grab_q(t: torch.Tensor, hook: Any, layer: int = layer) -> None:
            queries[layer] = t[0, -window:].detach().double().cpu().transpose(0, 1)  # [B, N, H, D] -> [H, w, D]

        points += [(block.attn.hook_pattern, grab_p), (q_point, grab_q)]
    tokens = prompt.view(1, -1).to(model.device)
    with temporary_hooks(points):
        model.logits(tokens)
    return PrefillView([attn[l] for l in range(geo.n_layers)], [queries[l] for l in range(geo.n_layers)], tokens.shape[1])


def key_scores(window_attention: torch.Tensor, group: int, cfg: TappaConfig) -> torch.Tensor:
    """[Hkv, N - w] CAKE's eviction score of each prefix key (the last w keys are always kept)."""
    w = window_attention.shape[1]
    prefix = window_attention[..., :-w] if w < window_attention.shape[-1] else window_attention[..., :0]
    if prefix.shape[-1] == 0:  # a prompt no longer than the window: no prefix key to score
        return prefix.new_zeros(prefix.shape[0] // group, 0)
    # over the window rows (torch's unbiased variance; a one-row window has no spread)
    score = prefix.mean(1) + cfg.gamma * prefix.var(1, correction=1 if w > 1 else 0)
    if score.shape[-1] and cfg.pool_kernel > 1:
        score = torch.nn.functional.avg_pool1d(score[:, None], cfg.pool_kernel, stride=1, padding=cfg.pool_kernel // 2)[:, 0]
    # explicit sizes: with no prefix keys (a prompt no longer than the window) view(-1, ...) is ambiguous
    return score.reshape(score.shape[0] // group, group, score.shape[-1]).mean(1)


def allocate(preference: Sequence[float] | np.ndarray, total: int, cap: int) -> np.ndarray:
    """CAKE's split: budgets proportional to the preference, each <= cap, the excess spread over the
    unclipped layers, rounded so they sum to ``total`` (or to everything when total > cap * L)."""
    pref = np.clip(np.asarray(preference, dtype=np.float64), 1e-12, None)
    n = len(pref)
    total = min(int(total), cap * n)
    budgets = pref / pref.sum() * total
    for _ in range(n):
        over = budgets > cap
        if not over.any():
            break
        excess = float((budgets[over] - cap).sum())
        budgets[over] = cap
        free = budgets < cap
        budgets[free] += excess * pref[free] / pref[free].sum()
    floor = np.floor(budgets).astype(int)
    for i in np.argsort(-(budgets - floor))[: total - int(floor.sum())]:
        floor[i] += 1
    return np.minimum(floor, cap)


def kept_keys(view: PrefillView, budgets: Sequence[int] | np.ndarray, group: int, cfg: TappaConfig) -> list[torch.Tensor]:
    """Per layer, bool [Hkv, N]: the top-B_l prefix keys of each KV head plus the last w keys."""
    out = []
    w = cfg.window
    for layer, attn in enumerate(view.window_attention):
        scores = key_scores(attn, group, cfg)  # [Hkv, N - w]
        keep = torch.zeros(scores.shape[0], view.n_tokens, dtype=torch.bool)
        keep[:, view.n_tokens - min(w, view.n_tokens) :] = True
        b = int(min(budgets[layer], scores.shape[-1]))
        if b > 0:
            top = scores.topk(b, dim=-1).indices
            keep.scatter_(1, top, True)
        out.append(keep)
    return out


@contextlib.contextmanager
def evicted_cache(model: Model, kept: Sequence[torch.Tensor], n_prompt: int) -> Iterator[None]:
    """Queries after the first ``n_prompt`` positions see, among the prompt's keys, only the kept
    ones (per KV head, so every query head of a KV head alike); prompt queries are untouched."""
    geo = model.geometry
    head_kv = torch.tensor(geo.head_to_kv)
    points = []
    for layer, keep in enumerate(kept):
        mask_q = keep[head_kv]  # [H, n_prompt] per query head

        def hook(scores: torch.Tensor, hook: Any, mask_q: torch.Tensor = mask_q) -> torch.Tensor:
            nq, nk = scores.shape[-2:]
            if nk <= n_prompt:
                return scores
            out = scores.clone()
            drop = ~mask_q.to(scores.device)  # [H, n_prompt]
            q0 = max(0, n_prompt - (nk - nq))  # first row at an absolute position >= n_prompt
            rows = out[:, :, q0:, :n_prompt]
            out[:, :, q0:, :n_prompt] = rows.masked_fill(drop[None, :, None, :], torch.finfo(scores.dtype).min)
            return out

        points.append((model.bridge.blocks[layer].attn.hook_attn_scores, hook))
    with temporary_hooks(points):
        yield


def tappa_budgets(view: PrefillView, q_sim: Sequence[float] | np.ndarray, total: int, cfg: TappaConfig) -> np.ndarray:
    """TAPPA's layer budgets for this prompt: preference 1 - q_sim_l (the layer's post-RoPE q-similarity
    over the window, computed by the caller), CAKE's split."""
    cap = max(view.n_tokens - cfg.window, 0)
    return allocate(1.0 - np.asarray(q_sim, dtype=np.float64), total, cap)


def uniform_budgets(n_layers: int, total: int, view: PrefillView, cfg: TappaConfig) -> np.ndarray:
    cap = max(view.n_tokens - cfg.window, 0)
    return allocate(np.ones(n_layers), total, cap)


__all__ = [
    "PrefillView",
    "TappaConfig",
    "allocate",
    "evicted_cache",
    "key_scores",
    "kept_keys",
    "prefill_view",
    "tappa_budgets",
    "uniform_budgets",
]
