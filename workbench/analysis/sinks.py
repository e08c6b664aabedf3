"""Attention sinks: heads that park attention on a few tokens, and which tokens.

Works from recorder statistics (per-key attention received, first-token mass), so it runs
at long context without N x N patterns. Definitions:

* first-token mass of a head: mean over queries of the attention on the first ``first_k``
  keys; for ``first_k = 1`` this is alpha_1 of Gu et al. (2024), the mean attention the first
  token receives from the queries that see it.
* sink rate (Gu et al., "When Attention Sink Emerges", ICLR 2025): share of heads with
  alpha_1 > eps, eps = 0.3, per layer and overall, averaged over prompts.
* sink tokens (ACT, Yu et al., ICML 2024): keys whose mean received attention over the
  queries that can see them exceeds tau = 0.1, and that at least a quarter of the prompt's
  queries can see. Without that share a key near the end passes on the say-so of a handful of
  local queries (on the organism 92% of ACT's hidden sinks sat in the last 32 of 256 positions).
  Keys before ``first_k`` are the first-token sink; the others are hidden sinks. ACT's own rule
  (no visibility share; its first detected sink spared) is kept beside it as
  ``act_hidden_sink_count``, and it is the rule ACT's calibration (`act_head_search`) uses by
  default (``sink_rule="act"``); ``sink_rule="guarded"`` calibrates the guarded set instead.
* massive activations (Sun et al., 2024): residual-stream entries far above the median
  magnitude of their layer (>= 100 and >= 1000x the median by default).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.analysis.scores import HeadScores
from workbench.errors import InputDataError
from workbench.models.heads import Head
from workbench.models.hooks import temporary_hooks
from workbench.models.model import Model
from workbench.record import AttentionRecord, AttentionRecorder, RecorderConfig


@dataclass(frozen=True)
class SinkConfig:
    """Defaults: eps from Gu et al. 2024; tau, beta from ACT (Yu et al. 2024); massive
    activation thresholds from Sun et al. 2024."""

    eps: float = 0.3  # Gu et al.: a head is a sink head when alpha_1 > eps
    first_k: int = 1  # keys counted as "the first token"
    tau: float = 0.1  # ACT: a key is a sink when its mean received attention > tau
    # Keys seen by less than this share of the prompt's queries are not called sinks: the last
    # keys of a prompt get a high mean from a handful of local queries. (ACT's code has no such
    # guard: its count is reported separately as act_hidden_sink_count.)
    min_query_share: float = 0.25
    massive_abs: float = 100.0  # Sun et al.: magnitude above this ...
    massive_ratio: float = 1000.0  # ... and this many times the layer's median magnitude
    massive_top: int = 3  # Sun et al. report the top-3 magnitudes per layer


@dataclass(frozen=True)
class SinkToken:
    prompt: int
    layer: int
    head: int
    position: int
    token: str
    mean_received: float
    kind: str  # "first" or "hidden"


@dataclass
class SinkReport:
    scores: HeadScores  # first_token_mass, sink_head (0/1 share of prompts), hidden_sink_count, hidden_sink_mass
    sink_rate_per_layer: np.ndarray  # [L] percent of heads with alpha_1 > eps, averaged over prompts
    sink_rate: float  # percent over all heads and prompts
    sink_tokens: list[SinkToken]
    token_sink_frequency: dict[str, tuple[int, int]]  # token -> (times a sink for >= 1 head, times seen)
    config: SinkConfig = field(default_factory=SinkConfig)

    def sink_heads(self) -> list[Head]:
        """Heads that are sink heads in the majority of prompts, strongest first."""
        return [h for h, v in self.scores.ranked("first_token_mass") if self.scores.score("sink_head", h) > 0.5]

    def hidden_sinks(self, head: Head | None = None) -> list[SinkToken]:
        return [t for t in self.sink_tokens if t.kind == "hidden" and (head is None or (t.layer, t.head) == tuple(head))]


def first_token_mass(record: AttentionRecord) -> np.ndarray:
    """[B, L, H] mean over queries of the attention on the first ``first_k`` keys."""
    mass = record.stack("first_k_mass")  # [L, B, H, N]
    return mass.mean(-1).permute(1, 0, 2).double().numpy()


def mean_received(record: AttentionRecord) -> np.ndarray:
    """[B, L, H, N] mean attention each key receives from the queries that can see it."""
    layers = [record.col_mean(layer) for layer in record.recorded_layers]
    return torch.stack(layers).permute(1, 0, 2, 3).double().numpy()


def sink_positions(col_mean: np.ndarray, seen_by: np.ndarray, n_queries: int, cfg: SinkConfig) -> np.ndarray:
    """Boolean [..., N]: keys above tau that at least ``min_query_share`` of the queries can see.

    ``seen_by`` [..., N] counts the queries that can see each key (causal, windows counted).
    """
    return (col_mean > cfg.tau) & (seen_by >= cfg.min_query_share * n_queries) & (seen_by > 0)


def act_sink_positions(col_mean: np.ndarray, cfg: SinkConfig) -> np.ndarray:
    """ACT's own sink set per head [..., N]: mean received attention > tau, minus its first
    detected sink (``indices[1:]`` in the reference code: usually, not always, key 0)."""
    sinks = col_mean > cfg.tau
    first = np.argmax(sinks, axis=-1)
    has = np.asarray(sinks.any(axis=-1))
    spared = np.zeros_like(sinks)
    np.put_along_axis(spared, first[..., None], has[..., None], axis=-1)
    return sinks & ~spared


def analyze_sink_records(
    records: Sequence[AttentionRecord],
    token_texts: Sequence[Sequence[str]],
    n_layers: int,
    n_heads: int,
    cfg: SinkConfig = SinkConfig(),
) -> SinkReport:
    """Pure: sink scores from recorder records (one record per prompt, batch of 1 each)."""
    if not records:
        raise InputDataError("no prompts to analyse", "give at least one prompt")
    first_mass, is_sink_head, hidden_count, hidden_mass, share, act_count = [], [], [], [], [], []
    tokens_out: list[SinkToken] = []
    seen: Counter[str] = Counter()
    sunk: Counter[str] = Counter()
    for p, (record, texts) in enumerate(zip(records, token_texts, strict=True)):
        if record.recorded_layers != list(range(n_layers)):
            raise ValueError("sink analysis needs every layer recorded")
        if record.layer(0).first_k != cfg.first_k:
            raise ValueError(f"record has first_k={record.layer(0).first_k}, config wants {cfg.first_k}")
        n = record.n_tokens
        fm = first_token_mass(record)[0]  # [L, H]
        cm = mean_received(record)[0]  # [L, H, N]
        seen_by = np.stack([record.layer(l).col_count.numpy() for l in range(n_layers)])[:, None, :]  # [L, 1, N]
        sinks = sink_positions(cm, seen_by, n, cfg)
        hidden = sinks.copy()
        hidden[..., : cfg.first_k] = False
        act_count.append(act_sink_positions(cm, cfg).sum(-1))
        first_mass.append(fm)
        is_sink_head.append(fm > cfg.eps)
        hidden_count.append(hidden.sum(-1))
        hidden_mass.append(np.where(hidden, cm, 0.0).sum(-1))
        col_sum = record.stack("col_sum")[:, 0].double().numpy()  # [L, H, N] (every layer recorded)
        share.append(np.where(sinks, col_sum, 0.0).sum(-1) / n)
        for layer, h, j in zip(*np.nonzero(sinks)):
            tokens_out.append(
                SinkToken(
                    p, int(layer), int(h), int(j), texts[j], float(cm[layer, h, j]), "first" if j < cfg.first_k else "hidden"
                )
            )
        eligible = seen_by.min(axis=(0, 1)) >= cfg.min_query_share * n
        any_head = np.asarray(sinks.any(axis=(0, 1)))
        for j in range(n):
            if eligible[j]:
                seen[texts[j]] += 1
                if any_head[j]:
                    sunk[texts[j]] += 1
    scores = HeadScores("sinks", n_layers, n_heads)
    scores.add("first_token_mass", np.mean(first_mass, 0), "mean attention on the first token(s) over queries (alpha_1)")
    scores.add("sink_head", np.mean(is_sink_head, 0), f"share of prompts where alpha_1 > eps ({cfg.eps})")
    scores.add(
        "hidden_sink_count",
        np.mean(hidden_count, 0),
        f"keys after the first with mean received attention > tau ({cfg.tau}), seen by >= {cfg.min_query_share:g} of the queries",
    )
    scores.add(
        "act_hidden_sink_count",
        np.mean(act_count, 0),
        f"ACT's own count (Yu et al. code): keys with mean received attention > tau ({cfg.tau}) minus the first detected, no visibility share",
    )
    scores.add("hidden_sink_mass", np.mean(hidden_mass, 0), "summed mean received attention of the hidden sinks")
    scores.add(
        "sink_attention_share",
        np.mean(share, 0),
        "share of all the head's attention that lands on its sink tokens (first + hidden)",
    )
    rate_per_layer = 100.0 * np.mean(is_sink_head, axis=(0, 2))
    freq = {tok: (sunk[tok], seen[tok]) for tok in seen}
    return SinkReport(scores, rate_per_layer, float(np.mean(rate_per_layer)), tokens_out, freq, cfg)


def analyze_sinks(
    model: Model,
    prompts: Sequence[torch.Tensor],
    cfg: SinkConfig = SinkConfig(),
    recorder: RecorderConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SinkReport:
    """Record each prompt (token ids [1, N] or [N]) and score sinks. Runs at long context."""
    rec_cfg = recorder or RecorderConfig()
    rec_cfg = RecorderConfig(**{**rec_cfg.__dict__, "first_k": cfg.first_k, "columns": True, "layers": None})
    records, texts = [], []
    for i, prompt in enumerate(prompts):
        tokens = prompt.view(1, -1)
        if tokens.shape[1] < 2:
            raise InputDataError(f"prompt {i} has {tokens.shape[1]} token(s)", "sink analysis needs prompts of at least 2 tokens")
        with AttentionRecorder(model, rec_cfg) as rec, torch.no_grad():
            model.logits(tokens)
        records.append(rec.last)
        texts.append(model.to_str_tokens(tokens[0]))
        if progress:
            progress(i + 1, len(prompts))
    return analyze_sink_records(records, texts, model.geometry.n_layers, model.geometry.n_heads, cfg)


# -- massive activations --------------------------------------------------------------------


@dataclass(frozen=True)
class MassiveActivation:
    layer: int
    position: int
    dim: int
    value: float
    token: str


@dataclass
class MassiveActivationReport:
    top_values: np.ndarray  # [L, top] largest |h| per layer (residual stream after the block)
    medians: np.ndarray  # [L] median |h| per layer
    massive: list[MassiveActivation]
    overlap_with_sinks: float | None = None  # share of massive-activation positions that are sink tokens

    def positions(self) -> set[int]:
        return {m.position for m in self.massive}


def massive_activations(model: Model, tokens: torch.Tensor, cfg: SinkConfig = SinkConfig()) -> MassiveActivationReport:
    """Top residual magnitudes per layer against the median (Sun et al. 2024), one prompt."""
    tokens = tokens.view(1, -1)
    resid: dict[int, torch.Tensor] = {}
    points = []
    for layer, block in enumerate(model.bridge.blocks):

        def grab(t: torch.Tensor, hook: Any, layer: int = layer) -> None:
            resid[layer] = t.detach().abs().float()[0].cpu()  # [N, d_model]

        points.append((block.hook_resid_post if hasattr(block, "hook_resid_post") else block.hook_out, grab))
    with temporary_hooks(points), torch.no_grad():
        model.logits(tokens)
    texts = model.to_str_tokens(tokens[0])
    tops, medians, found = [], [], []
    for layer in range(len(resid)):
        mag = resid[layer]
        median = float(mag.median())
        flat = mag.flatten()
        values, idx = flat.topk(min(cfg.massive_top, flat.numel()))
        tops.append(values.numpy())
        medians.append(median)
        hits = (mag > cfg.massive_abs) & (mag > cfg.massive_ratio * median)
        for pos, dim in hits.nonzero().tolist():
            found.append(MassiveActivation(layer, pos, dim, float(mag[pos, dim]), texts[pos]))
    return MassiveActivationReport(np.array(tops), np.array(medians), found)


def overlap_with_sinks(massive: MassiveActivationReport, report: SinkReport, prompt: int = 0) -> float | None:
    """Share of positions carrying massive activations that are also sink tokens of some head."""
    positions = massive.positions()
    if not positions:
        return None
    sink_positions_ = {t.position for t in report.sink_tokens if t.prompt == prompt}
    return len(positions & sink_positions_) / len(positions)


# -- causal checks ------------------------------------------------------------------------------


@dataclass
class RemovalCheck:
    """Loss change when the top vs the bottom heads (by a sink statistic) lose some of their keys:
    the first token (`first_token_removal_check`) or their own sink tokens (`sink_removal_check`)."""

    base_loss: float
    top_heads: list[Head]
    bottom_heads: list[Head]
    top_loss: float
    bottom_loss: float

    @property
    def top_delta(self) -> float:
        return self.top_loss - self.base_loss

    @property
    def bottom_delta(self) -> float:
        return self.bottom_loss - self.base_loss


FirstTokenRemovalCheck = RemovalCheck
SinkRemovalCheck = RemovalCheck


def first_token_removal_check(
    model: Model, report: SinkReport, prompts: Sequence[torch.Tensor], k: int = 3
) -> FirstTokenRemovalCheck:
    """Causal check of the sink ranking: remove the first token's key for the k strongest
    and the k weakest first-token heads (mass renormalised), and compare the loss change."""
    from workbench.analysis.metrics import lm_loss
    from workbench.interventions.attention_edits import removed_first_token

    ranked = [h for h, _ in report.scores.ranked("first_token_mass")]
    top, bottom = ranked[:k], ranked[-k:]
    base = lm_loss(model, prompts)
    with removed_first_token(model, top, report.config.first_k):
        top_loss = lm_loss(model, prompts)
    with removed_first_token(model, bottom, report.config.first_k):
        bottom_loss = lm_loss(model, prompts)
    return FirstTokenRemovalCheck(base, top, bottom, top_loss, bottom_loss)


def _sink_keys(report: SinkReport, prompt: int) -> dict[tuple[int, int], list[int]]:
    keys: dict[tuple[int, int], list[int]] = {}
    for t in report.sink_tokens:
        if t.prompt == prompt:
            keys.setdefault((t.layer, t.head), []).append(t.position)
    return keys


@torch.no_grad()
def loss_without_sinks(model: Model, report: SinkReport, prompts: Sequence[torch.Tensor], heads: Sequence[Head]) -> float:
    """Mean next-token loss when each chosen head cannot attend to its own sink tokens
    (first and hidden, as found for that prompt); the removed mass is renormalised."""
    import torch.nn.functional as F

    from workbench.interventions.attention_edits import remove_keys

    chosen = {(h.layer, h.head) for h in heads}
    total, count = 0.0, 0
    for p, prompt in enumerate(prompts):
        tokens = prompt.view(1, -1).to(model.device)
        keys = {k: v for k, v in _sink_keys(report, p).items() if k in chosen}
        points = []
        for layer in sorted({l for l, _ in keys}):
            per_head = {h: pos for (l, h), pos in keys.items() if l == layer}

            def hook(pattern: torch.Tensor, hook: Any, per_head: dict[int, list[int]] = per_head) -> torch.Tensor:
                out = pattern.clone()
                for h, pos in per_head.items():
                    out[:, h] = remove_keys(pattern[:, h].float(), pos).to(pattern.dtype)
                return out

            points.append((model.bridge.blocks[layer].attn.hook_pattern, hook))
        with temporary_hooks(points):
            logits = model.logits(tokens)[0, :-1].float()
        total += float(F.cross_entropy(logits, tokens[0, 1:], reduction="sum"))
        count += tokens.shape[1] - 1
    return total / max(count, 1)


def sink_removal_check(model: Model, report: SinkReport, prompts: Sequence[torch.Tensor], k: int = 3) -> SinkRemovalCheck:
    from workbench.analysis.metrics import lm_loss

    ranked = [h for h, _ in report.scores.ranked("sink_attention_share")]
    top, bottom = ranked[:k], ranked[-k:]
    base = lm_loss(model, prompts)
    return SinkRemovalCheck(
        base, top, bottom, loss_without_sinks(model, report, prompts, top), loss_without_sinks(model, report, prompts, bottom)
    )


@dataclass
class ActResult:
    """ACT head search: heads kept on the calibration set, metric before/after on held-out data."""

    candidates: list[Head]
    single_head_gain: dict[Head, float]  # calibration-set metric change per candidate head
    selected: list[Head]
    calibration_before: float
    calibration_after: float
    evaluation_before: float
    evaluation_after: float
    beta: float
    tau: float
    sink_rule: str = "act"


def act_head_search(
    model: Model,
    calibration_metric: Callable[[], float],
    evaluation_metric: Callable[[], float],
    candidates: Sequence[Head] | None = None,
    beta: float = 0.4,
    tau: float = 0.1,
    min_gain: float = 0.0,
    skip_first_layers: int = 2,
    skip_last_layers: int = 1,
    min_query_share: float = 0.25,
    progress: Callable[[int, int], None] | None = None,
    sink_rule: str = "act",
) -> ActResult:
    """ACT (Yu et al. 2024): calibrate one head at a time, keep those that improve the
    calibration metric (higher is better) by more than ``min_gain``, then report the
    metric with all kept heads calibrated on the calibration set and on a held-out set.

    The keys calibrated are found by ``sink_rule``: ``"act"`` (default) is ACT's own rule (mean
    received attention > tau, its first detected sink spared), so the search reproduces ACT's
    calibration; ``"guarded"`` also needs the key seen by >= ``min_query_share`` of the queries (the
    workbench's reported hidden sinks). Candidates default to every head of the layers ACT
    calibrates (its code: never the first two layers nor the last; `act_layers`).
    ``progress(done, total)`` is called after each candidate head is tried."""
    from functools import partial

    from workbench.interventions.attention_edits import act_calibrated as _act
    from workbench.interventions.attention_edits import act_layers, act_query_share

    act_query_share(sink_rule)  # an unknown rule fails before any pass
    act_calibrated = partial(_act, sink_rule=sink_rule, min_query_share=min_query_share)
    geo = model.geometry
    if candidates is not None:
        heads = list(candidates)
    else:
        layers = act_layers(geo.n_layers, skip_first_layers, skip_last_layers)
        heads = [h for h in geo.all_heads() if h.layer in layers]
    base_cal = calibration_metric()
    gains: dict[Head, float] = {}
    for i, head in enumerate(heads):
        with act_calibrated(model, [head], beta=beta, tau=tau):
            gains[head] = calibration_metric() - base_cal
        if progress is not None:
            progress(i + 1, len(heads))
    selected = [h for h in heads if gains[h] > min_gain]
    base_eval = evaluation_metric()
    if selected:
        with act_calibrated(model, selected, beta=beta, tau=tau):
            cal_after, eval_after = calibration_metric(), evaluation_metric()
    else:
        cal_after, eval_after = base_cal, base_eval
    return ActResult(heads, gains, selected, base_cal, cal_after, base_eval, eval_after, beta, tau, sink_rule)
