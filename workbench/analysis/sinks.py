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

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.analysis.metrics import Targets, logprob_sums
from workbench.analysis.scores import HeadScores
from workbench.errors import InputDataError
from workbench.interventions.attention_edits import removal_edits
from workbench.interventions.kernel_edits import kernel_edits
from workbench.kernels import HeadEdit
from workbench.models.heads import Head
from workbench.models.hooks import temporary_hooks
from workbench.models.model import Model
from workbench.record import AttentionRecord, AttentionRecorder, RecorderConfig

#: the instrumented core, nothing recorded: the edited and unedited scoring passes of the checks
NO_RECORDING = RecorderConfig(layers=(), columns=False)


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
    # per prompt: (summed next-token log-probability, tokens scored) of the recorded pass (analyze_sinks)
    prompt_logprob: list[tuple[float, int]] | None = None

    @property
    def base_loss(self) -> float | None:
        """Mean next-token loss of the recorded prompts (None for a report built from records alone)."""
        if self.prompt_logprob is None:
            return None
        return -sum(s for s, _ in self.prompt_logprob) / max(sum(c for _, c in self.prompt_logprob), 1)

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


@dataclass
class _PromptSinks:
    """What the sink report keeps of one prompt's record (the record itself is dropped at once)."""

    first_mass: np.ndarray  # [L, H]
    hidden_count: np.ndarray  # [L, H]
    hidden_mass: np.ndarray  # [L, H]
    share: np.ndarray  # [L, H]
    act_count: np.ndarray  # [L, H]
    tokens: list[SinkToken]
    seen: Counter[str]
    sunk: Counter[str]


def _prompt_sinks(p: int, record: AttentionRecord, texts: Sequence[str], n_layers: int, cfg: SinkConfig) -> _PromptSinks:
    """Reduce one prompt's record (batch of 1) to the sink report's per-prompt numbers. Reads only
    first_k_mass, col_sum and the column counts: no per-query statistic besides first_k_mass, no pooled map."""
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
    col_sum = record.stack("col_sum")[:, 0].double().numpy()  # [L, H, N] (every layer recorded)
    tokens_out = [
        SinkToken(p, int(layer), int(h), int(j), texts[j], float(cm[layer, h, j]), "first" if j < cfg.first_k else "hidden")
        for layer, h, j in zip(*np.nonzero(sinks))
    ]
    seen: Counter[str] = Counter()
    sunk: Counter[str] = Counter()
    eligible = seen_by.min(axis=(0, 1)) >= cfg.min_query_share * n
    any_head = np.asarray(sinks.any(axis=(0, 1)))
    for j in range(n):
        if eligible[j]:
            seen[texts[j]] += 1
            if any_head[j]:
                sunk[texts[j]] += 1
    return _PromptSinks(
        first_mass=fm,
        hidden_count=hidden.sum(-1),
        hidden_mass=np.where(hidden, cm, 0.0).sum(-1),
        share=np.where(sinks, col_sum, 0.0).sum(-1) / n,
        act_count=act_sink_positions(cm, cfg).sum(-1),
        tokens=tokens_out,
        seen=seen,
        sunk=sunk,
    )


def _sink_report(parts: Sequence[_PromptSinks], n_layers: int, n_heads: int, cfg: SinkConfig) -> SinkReport:
    first_mass = [q.first_mass for q in parts]
    is_sink_head = [q.first_mass > cfg.eps for q in parts]
    seen: Counter[str] = Counter()
    sunk: Counter[str] = Counter()
    for q in parts:
        seen.update(q.seen)
        sunk.update(q.sunk)
    scores = HeadScores("sinks", n_layers, n_heads)
    scores.add("first_token_mass", np.mean(first_mass, 0), "mean attention on the first token(s) over queries (alpha_1)")
    scores.add("sink_head", np.mean(is_sink_head, 0), f"share of prompts where alpha_1 > eps ({cfg.eps})")
    scores.add(
        "hidden_sink_count",
        np.mean([q.hidden_count for q in parts], 0),
        f"keys after the first with mean received attention > tau ({cfg.tau}), seen by >= {cfg.min_query_share:g} of the queries",
    )
    scores.add(
        "act_hidden_sink_count",
        np.mean([q.act_count for q in parts], 0),
        f"ACT's own count (Yu et al. code): keys with mean received attention > tau ({cfg.tau}) minus the first detected, no visibility share",
    )
    scores.add(
        "hidden_sink_mass", np.mean([q.hidden_mass for q in parts], 0), "summed mean received attention of the hidden sinks"
    )
    scores.add(
        "sink_attention_share",
        np.mean([q.share for q in parts], 0),
        "share of all the head's attention that lands on its sink tokens (first + hidden)",
    )
    rate_per_layer = 100.0 * np.mean(is_sink_head, axis=(0, 2))
    freq = {tok: (sunk[tok], seen[tok]) for tok in seen}
    tokens = [t for q in parts for t in q.tokens]
    return SinkReport(scores, rate_per_layer, float(np.mean(rate_per_layer)), tokens, freq, cfg)


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
    parts = [
        _prompt_sinks(p, record, texts, n_layers, cfg) for p, (record, texts) in enumerate(zip(records, token_texts, strict=True))
    ]
    return _sink_report(parts, n_layers, n_heads, cfg)


#: what the sink analysis records: per-key columns (it reads col_sum and first_k_mass), no pooled map
SINK_RECORDING = RecorderConfig(columns=True, pooled=False)


def analyze_sinks(
    model: Model,
    prompts: Sequence[torch.Tensor],
    cfg: SinkConfig = SinkConfig(),
    recorder: RecorderConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SinkReport:
    """Record each prompt (token ids [1, N] or [N]) and score sinks. Runs at long context.

    Each record is reduced as soon as it is taken (one prompt's statistics in host memory at a time,
    recorded without the pooled map unless ``recorder`` asks for it), and the same instrumented pass
    scores the prompt's next tokens (chunked logits): the report's `base_loss`, which the removal
    checks compare against, on the same attention path as their edited passes.
    """
    from workbench.analysis.metrics import row_logprob_sums

    rec_cfg = recorder or SINK_RECORDING
    rec_cfg = RecorderConfig(**{**rec_cfg.__dict__, "first_k": cfg.first_k, "columns": True, "layers": None})
    n_layers, n_heads = model.geometry.n_layers, model.geometry.n_heads
    parts: list[_PromptSinks] = []
    logprob: list[tuple[float, int]] = []
    for i, prompt in enumerate(prompts):
        tokens = prompt.view(1, -1)
        if tokens.shape[1] < 2:
            raise InputDataError(f"prompt {i} has {tokens.shape[1]} token(s)", "sink analysis needs prompts of at least 2 tokens")
        target = Targets.next_tokens(tokens)
        with AttentionRecorder(model, rec_cfg) as rec, torch.no_grad():
            total = row_logprob_sums(model, tokens, target.positions, target.targets)
        parts.append(_prompt_sinks(i, rec.last, model.to_str_tokens(tokens[0]), n_layers, cfg))
        logprob.append((float(total[0]), target.count))
        del rec
        if progress:
            progress(i + 1, len(prompts))
    if not parts:
        raise InputDataError("no prompts to analyse", "give at least one prompt")
    report = _sink_report(parts, n_layers, n_heads, cfg)
    report.prompt_logprob = logprob
    return report


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
#
# Every check runs under the instrumented core with kernel-side edits (`workbench.kernels.HeadEdit`): no
# N x N pattern, any length. The edited variants of one prompt (a head, or a group of heads, per variant)
# share a forward, one variant per batch row of the repeated prompt, at most `BatchLimits.rows_for` rows.
# A variant that edits nothing on a prompt (its heads have no sinks there) costs nothing: it scores
# exactly the unedited pass. The eager hook versions (`workbench.interventions.attention_edits`) are the
# references they are tested against (tests/analysis/test_sinks_kernel_checks.py).


@dataclass(frozen=True)
class BatchLimits:
    """How many edited variants of one prompt share a forward: at most ``rows`` batch rows and
    ``tokens`` tokens in all (a long prompt runs one variant per pass: its cost is then the attention,
    not the per-pass overhead that batching saves)."""

    rows: int = 8
    tokens: int = 16384

    def rows_for(self, n_tokens: int) -> int:
        return max(1, min(int(self.rows), int(self.tokens) // max(int(n_tokens), 1)))


#: the keys each head of a variant loses on one prompt
Removal = Mapping[Head, Sequence[int]]


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _row_edits(per_row: Sequence[Mapping[int, Sequence[HeadEdit]]]) -> dict[int, list[HeadEdit]]:
    """Merge per-row edit sets into one {layer: [HeadEdit]}: row r's edits apply to batch row r only."""
    merged: dict[int, list[HeadEdit]] = {}
    for r, edits in enumerate(per_row):
        for layer, layer_edits in edits.items():
            merged.setdefault(layer, []).extend(dataclasses.replace(e, rows=(r,)) for e in layer_edits)
    return merged


@torch.no_grad()
def _variant_sums(
    model: Model,
    target: Targets,
    variants: Sequence[Mapping[int, Sequence[HeadEdit]]],
    limits: BatchLimits,
) -> list[float]:
    """Summed target log-probability of one sequence under each variant's edits (one row per variant,
    chunked to the batch limits). Runs under the instrumented core the caller installed."""
    from workbench.analysis.metrics import row_logprob_sums

    out: list[float] = []
    for chunk in _chunks(variants, limits.rows_for(target.tokens.numel())):
        tokens = target.tokens.view(1, -1).expand(len(chunk), -1)
        with kernel_edits(model, _row_edits(chunk)):
            out.extend(float(v) for v in row_logprob_sums(model, tokens, target.positions, target.targets))
    return out


@torch.no_grad()
def removal_losses(
    model: Model,
    prompts: Sequence[torch.Tensor],
    variants: Sequence[Sequence[Removal]],
    base: Sequence[tuple[float, int]] | None = None,
    limits: BatchLimits = BatchLimits(),
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Mean next-token loss over the prompts under each variant: ``variants[v][p]`` maps each head to
    the keys it cannot attend to on prompt ``p`` (mass renormalised, as `remove_keys`). ``base``: the
    unedited (log-probability sum, count) per prompt when already known (`SinkReport.prompt_logprob`);
    otherwise one unedited pass per prompt measures it.

    Passes: per prompt, ceil(variants that edit something on it / rows) (+ 1 without ``base``)."""
    from workbench.analysis.metrics import Targets, row_logprob_sums

    sums = [0.0] * len(variants)
    count = 0
    with AttentionRecorder(model, NO_RECORDING):
        for p, prompt in enumerate(prompts):
            target = Targets.next_tokens(prompt)
            count += target.count
            if base is not None:
                base_sum = base[p][0]
            else:
                base_sum = float(row_logprob_sums(model, target.tokens.view(1, -1), target.positions, target.targets)[0])
            live = [v for v in range(len(variants)) if any(variants[v][p].values())]
            for v in range(len(variants)):
                if v not in live:
                    sums[v] += base_sum
            edited = _variant_sums(model, target, [removal_edits(variants[v][p]) for v in live], limits)
            for v, total in zip(live, edited, strict=True):
                sums[v] += total
            if progress is not None:
                progress(p + 1, len(prompts))
    return [-total / max(count, 1) for total in sums]


def _sink_keys(report: SinkReport, prompt: int) -> dict[Head, list[int]]:
    keys: dict[Head, list[int]] = {}
    for t in report.sink_tokens:
        if t.prompt == prompt:
            keys.setdefault(Head(t.layer, t.head), []).append(t.position)
    return keys


def sink_removal(report: SinkReport, n_prompts: int, heads: Sequence[Head]) -> list[Removal]:
    """Per prompt: each chosen head loses its own sink tokens on that prompt (first and hidden)."""
    chosen = {Head(*h) for h in heads}
    out: list[Removal] = []
    for p in range(n_prompts):
        out.append({h: keys for h, keys in _sink_keys(report, p).items() if h in chosen})
    return out


def first_token_removal(n_prompts: int, heads: Sequence[Head], first_k: int = 1) -> list[Removal]:
    """Per prompt: each chosen head loses the first ``first_k`` keys."""
    return [{Head(*h): list(range(first_k)) for h in heads} for _ in range(n_prompts)]


def _base(report: SinkReport, prompts: Sequence[torch.Tensor]) -> list[tuple[float, int]] | None:
    """The report's unedited sums when they are those of these prompts."""
    got = report.prompt_logprob
    if got is None or len(got) != len(prompts):
        return None
    if any(c != p.numel() - 1 for (_, c), p in zip(got, prompts, strict=True)):
        return None
    return list(got)


def _loss(base: Sequence[tuple[float, int]]) -> float:
    return -sum(s for s, _ in base) / max(sum(c for _, c in base), 1)


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


@dataclass
class SinkEvidence:
    """The sink family's causal evidence, measured in one packed sweep (`sink_evidence`)."""

    base_loss: float
    head_loss: dict[Head, float]  # loss when only this head loses its sink tokens
    sink_check: SinkRemovalCheck
    first_token_check: FirstTokenRemovalCheck


def sink_evidence(
    model: Model,
    report: SinkReport,
    prompts: Sequence[torch.Tensor],
    heads: Sequence[Head],
    k: int = 3,
    limits: BatchLimits = BatchLimits(),
    progress: Callable[[int, int], None] | None = None,
) -> SinkEvidence:
    """Per-head sink removal for ``heads``, and the top-k vs bottom-k group checks (sink tokens ranked
    by sink_attention_share, the first token ranked by first_token_mass), all as variants of one sweep:
    per prompt ceil(variants editing something / rows) passes, the base from the report's recording."""
    n = len(prompts)
    by_share = [h for h, _ in report.scores.ranked("sink_attention_share")]
    by_first = [h for h, _ in report.scores.ranked("first_token_mass")]
    sink_top, sink_bottom = by_share[:k], by_share[-k:]
    first_top, first_bottom = by_first[:k], by_first[-k:]
    per_prompt = [sink_removal(report, n, [h]) for h in heads]
    per_prompt += [sink_removal(report, n, sink_top), sink_removal(report, n, sink_bottom)]
    per_prompt += [first_token_removal(n, g, report.config.first_k) for g in (first_top, first_bottom)]
    variants = [[v[p] for p in range(n)] for v in per_prompt]
    base = _base(report, prompts)
    if base is None:
        with AttentionRecorder(model, NO_RECORDING):
            base = logprob_sums(model, [Targets.next_tokens(p) for p in prompts])
    losses = removal_losses(model, prompts, variants, base, limits, progress)
    base_loss = _loss(base)
    m = len(heads)
    return SinkEvidence(
        base_loss,
        {Head(*h): losses[i] for i, h in enumerate(heads)},
        SinkRemovalCheck(base_loss, sink_top, sink_bottom, losses[m], losses[m + 1]),
        FirstTokenRemovalCheck(base_loss, first_top, first_bottom, losses[m + 2], losses[m + 3]),
    )


def first_token_removal_check(
    model: Model, report: SinkReport, prompts: Sequence[torch.Tensor], k: int = 3, limits: BatchLimits = BatchLimits()
) -> FirstTokenRemovalCheck:
    """Causal check of the sink ranking: remove the first token's key for the k strongest
    and the k weakest first-token heads (mass renormalised), and compare the loss change."""
    ranked = [h for h, _ in report.scores.ranked("first_token_mass")]
    top, bottom = ranked[:k], ranked[-k:]
    n = len(prompts)
    base = _base(report, prompts)
    variants = [first_token_removal(n, g, report.config.first_k) for g in (top, bottom)]
    if base is None:
        with AttentionRecorder(model, NO_RECORDING):
            base = logprob_sums(model, [Targets.next_tokens(p) for p in prompts])
    top_loss, bottom_loss = removal_losses(model, prompts, variants, base, limits)
    return FirstTokenRemovalCheck(_loss(base), top, bottom, top_loss, bottom_loss)


def loss_without_sinks(
    model: Model,
    report: SinkReport,
    prompts: Sequence[torch.Tensor],
    heads: Sequence[Head],
    limits: BatchLimits = BatchLimits(),
) -> float:
    """Mean next-token loss when each chosen head cannot attend to its own sink tokens
    (first and hidden, as found for that prompt); the removed mass is renormalised."""
    return removal_losses(model, prompts, [sink_removal(report, len(prompts), heads)], _base(report, prompts), limits)[0]


def sink_removal_check(
    model: Model, report: SinkReport, prompts: Sequence[torch.Tensor], k: int = 3, limits: BatchLimits = BatchLimits()
) -> SinkRemovalCheck:
    """The k heads with the largest vs the smallest sink_attention_share lose their own sink tokens."""
    ranked = [h for h, _ in report.scores.ranked("sink_attention_share")]
    top, bottom = ranked[:k], ranked[-k:]
    n = len(prompts)
    base = _base(report, prompts)
    if base is None:
        with AttentionRecorder(model, NO_RECORDING):
            base = logprob_sums(model, [Targets.next_tokens(p) for p in prompts])
    top_loss, bottom_loss = removal_losses(model, prompts, [sink_removal(report, n, g) for g in (top, bottom)], base, limits)
    return SinkRemovalCheck(_loss(base), top, bottom, top_loss, bottom_loss)


# -- ACT ------------------------------------------------------------------------------------------


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
    # candidates not tried, with the reason: a head with no sink under the rule on any calibration
    # sequence is left exactly as it is by ACT, so its gain is 0 without a pass
    skipped: dict[Head, str] = field(default_factory=dict)
    passes: int = 0  # forward passes the search made (the kernel path)


def _act_sets(record: AttentionRecord, heads: Sequence[Head], tau: float, min_query_share: float) -> dict[Head, tuple[int, ...]]:
    """ACT's sink set (spared sink removed) of each head on the recorded sequence (batch row 0)."""
    from workbench.interventions.attention_edits import act_sink_mask

    out: dict[Head, tuple[int, ...]] = {}
    n = record.n_tokens
    for layer in sorted({h.layer for h in heads}):
        stats = record.layer(layer)
        mean = record.col_mean(layer)[0]  # [H, N]
        mask = act_sink_mask(mean, stats.col_count, n, tau, min_query_share)
        for h in heads:
            if h.layer == layer:
                out[h] = tuple(int(j) for j in torch.nonzero(mask[h.head]).flatten().tolist())
    return out


class _ActRunner:
    """The kernel path of the ACT search: recorded passes find the sink sets, edited passes score."""

    def __init__(self, model: Model, beta: float, tau: float, min_query_share: float, limits: BatchLimits) -> None:
        self.model, self.beta, self.tau, self.share, self.limits = model, beta, tau, min_query_share, limits
        self.passes = 0

    def record(self, item: Targets, layers: Sequence[int], heads: Sequence[Head], edits: Mapping[int, Sequence[HeadEdit]]):
        """One pass of ``item`` under ``edits``, recording ``layers``: (log-prob sum, sink sets of ``heads``)."""
        from workbench.analysis.metrics import row_logprob_sums

        cfg = RecorderConfig(columns=True, pooled=False, layers=tuple(sorted(set(layers)))) if layers else NO_RECORDING
        with AttentionRecorder(self.model, cfg) as rec, kernel_edits(self.model, edits):
            total = float(row_logprob_sums(self.model, item.tokens.view(1, -1), item.positions, item.targets)[0])
        self.passes += 1
        return total, (_act_sets(rec.last, heads, self.tau, self.share) if heads else {})

    def score(self, item: Targets, variants: Sequence[Mapping[int, Sequence[HeadEdit]]]) -> list[float]:
        if not variants:
            return []
        with AttentionRecorder(self.model, NO_RECORDING):
            out = _variant_sums(self.model, item, variants, self.limits)
        self.passes += len(_chunks(variants, self.limits.rows_for(item.tokens.numel())))
        return out

    def kept(self, item: Targets, selected: Sequence[Head], first: Mapping[Head, Sequence[int]] | None):
        """(base sum or None, sum with every selected head calibrated). ACT finds each layer's sinks on
        the pattern it sees, i.e. with the calibration of the earlier layers in force: the layers are
        resolved in order, one recorded pass each (the first from ``first``, the unedited sets, when known)."""
        from workbench.interventions.attention_edits import act_edits

        layers = sorted({h.layer for h in selected})
        sets: dict[Head, Sequence[int]] = {}
        base = None
        for i, layer in enumerate(layers):
            here = [h for h in selected if h.layer == layer]
            if i == 0 and first is not None:
                sets.update({h: first[h] for h in here})
                continue
            total, found = self.record(item, [layer], here, act_edits(sets, self.beta))
            if i == 0:
                base = total
            sets.update(found)
        return base, self.score(item, [act_edits(sets, self.beta)])[0]


def _act_search_kernel(
    model: Model,
    calibration: Sequence[Targets],
    evaluation: Sequence[Targets],
    heads: list[Head],
    beta: float,
    tau: float,
    min_gain: float,
    min_query_share: float,
    progress: Callable[[int, int], None] | None,
    sink_rule: str,
    limits: BatchLimits,
) -> ActResult:
    from workbench.interventions.attention_edits import act_edits

    if not calibration or not evaluation:
        raise InputDataError("the ACT search needs calibration and evaluation sequences", "give at least one of each")
    run = _ActRunner(model, beta, tau, min_query_share, limits)
    layers = sorted({h.layer for h in heads})
    cal_count = max(sum(t.count for t in calibration), 1)
    base_sums, cal_sets = [], []
    for item in calibration:
        total, found = run.record(item, layers, heads, {})
        base_sums.append(total)
        cal_sets.append(found)
    base_cal = sum(base_sums) / cal_count
    tried = [h for h in heads if any(found[h] for found in cal_sets)]
    lengths = sorted({t.tokens.numel() for t in calibration})
    span = f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
    rule = "ACT's own rule" if min_query_share <= 0 else f"the guarded rule (seen by >= {min_query_share:g} of the queries)"
    why = (
        f"no key above tau ({tau:g}) besides the spared first sink, under {rule}, on any of the "
        f"{len(calibration)} calibration sequences ({span} tokens): ACT leaves the head as it is"
    )
    skipped = {h: why for h in heads if h not in tried}
    gains: dict[Head, float] = {h: 0.0 for h in skipped}
    done = 0
    for _ in skipped:
        done += 1
        if progress is not None:
            progress(done, len(heads))
    for chunk in _chunks(tried, limits.rows_for(max(t.tokens.numel() for t in calibration))):
        totals = {h: 0.0 for h in chunk}
        for p, item in enumerate(calibration):
            live = [h for h in chunk if cal_sets[p][h]]
            for h in chunk:
                if h not in live:
                    totals[h] += base_sums[p]
            for h, total in zip(live, run.score(item, [act_edits({h: cal_sets[p][h]}, beta) for h in live]), strict=True):
                totals[h] += total
        for h in chunk:
            gains[h] = totals[h] / cal_count - base_cal
            done += 1
            if progress is not None:
                progress(done, len(heads))
    selected = [h for h in heads if gains[h] > min_gain]
    eval_count = max(sum(t.count for t in evaluation), 1)
    if selected:
        cal_after = sum(run.kept(item, selected, cal_sets[p])[1] for p, item in enumerate(calibration)) / cal_count
        kept = [run.kept(item, selected, None) for item in evaluation]
        base_eval = sum(b for b, _ in kept if b is not None) / eval_count
        eval_after = sum(a for _, a in kept) / eval_count
    else:
        base_eval = sum(run.record(item, [], [], {})[0] for item in evaluation) / eval_count
        cal_after, eval_after = base_cal, base_eval
    return ActResult(
        heads, gains, selected, base_cal, cal_after, base_eval, eval_after, beta, tau, sink_rule, skipped, run.passes
    )


def _act_search_eager(
    model: Model,
    calibration_metric: Callable[[], float],
    evaluation_metric: Callable[[], float],
    heads: list[Head],
    beta: float,
    tau: float,
    min_gain: float,
    min_query_share: float,
    progress: Callable[[int, int], None] | None,
    sink_rule: str,
) -> ActResult:
    """The reference path: any metric callables, ACT as eager pattern hooks, one pass set per head."""
    from workbench.interventions.attention_edits import act_calibrated

    base_cal = calibration_metric()
    gains: dict[Head, float] = {}
    for i, head in enumerate(heads):
        with act_calibrated(model, [head], beta=beta, tau=tau, sink_rule=sink_rule, min_query_share=min_query_share):
            gains[head] = calibration_metric() - base_cal
        if progress is not None:
            progress(i + 1, len(heads))
    selected = [h for h in heads if gains[h] > min_gain]
    base_eval = evaluation_metric()
    if selected:
        with act_calibrated(model, selected, beta=beta, tau=tau, sink_rule=sink_rule, min_query_share=min_query_share):
            cal_after, eval_after = calibration_metric(), evaluation_metric()
    else:
        cal_after, eval_after = base_cal, base_eval
    return ActResult(heads, gains, selected, base_cal, cal_after, base_eval, eval_after, beta, tau, sink_rule)


def act_head_search(
    model: Model,
    calibration: Sequence[Targets] | Callable[[], float],
    evaluation: Sequence[Targets] | Callable[[], float],
    candidates: Sequence[Head] | None = None,
    beta: float = 0.4,
    tau: float = 0.1,
    min_gain: float = 0.0,
    skip_first_layers: int = 2,
    skip_last_layers: int = 1,
    min_query_share: float = 0.25,
    progress: Callable[[int, int], None] | None = None,
    sink_rule: str = "act",
    limits: BatchLimits = BatchLimits(),
) -> ActResult:
    """ACT (Yu et al. 2024): calibrate one head at a time, keep those that improve the
    calibration metric (higher is better) by more than ``min_gain``, then report the
    metric with all kept heads calibrated on the calibration set and on a held-out set.

    The keys calibrated are found by ``sink_rule``: ``"act"`` (default) is ACT's own rule (mean
    received attention > tau, its first detected sink spared), so the search reproduces ACT's
    calibration; ``"guarded"`` also needs the key seen by >= ``min_query_share`` of the queries (the
    workbench's reported hidden sinks). Candidates default to every head of the layers ACT
    calibrates (its code: never the first two layers nor the last; `act_layers`).
    ``progress(done, total)`` is called after each candidate head is tried (or skipped).

    ``calibration`` / ``evaluation``: teacher-forced sequences (`workbench.analysis.metrics.Targets`;
    the metric is their mean target log-probability). Then ACT runs as kernel-side edits under the
    instrumented core: one recorded pass per calibration sequence finds every candidate's sink set and
    the base metric; heads without a sink on any sequence are skipped (`ActResult.skipped`: ACT cannot
    change them); the others are scored ``limits.rows_for(N)`` heads per pass, one per batch row.
    Metric callables instead run the eager reference (pattern hooks, a full metric per head).
    """
    from workbench.interventions.attention_edits import act_layers, act_query_share

    share = act_query_share(sink_rule, min_query_share)  # an unknown rule fails before any pass
    geo = model.geometry
    if candidates is not None:
        heads = [Head(*h) for h in candidates]
    else:
        layers = act_layers(geo.n_layers, skip_first_layers, skip_last_layers)
        heads = [h for h in geo.all_heads() if h.layer in layers]
    if callable(calibration) or callable(evaluation):
        if not (callable(calibration) and callable(evaluation)):
            raise InputDataError("give the ACT search two metric callables or two sequence sets", "not one of each")
        return _act_search_eager(model, calibration, evaluation, heads, beta, tau, min_gain, share, progress, sink_rule)
    return _act_search_kernel(
        model, list(calibration), list(evaluation), heads, beta, tau, min_gain, share, progress, sink_rule, limits
    )
