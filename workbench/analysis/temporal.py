"""Temporal predictability of attention: how stable a head's queries are, and which
kind of pattern it draws.

* q-similarity (TAPPA, "Why Attention Patterns Exist"): per head, the mean cosine over all
  ordered off-diagonal query pairs of a set of positions. TAPPA computes it two ways, and so does
  this module: its pruning path (``Prune/prune/model_utils.py``) on the pre-RoPE queries (hook_q,
  the q_proj output) of whole chunks of up to 1024 tokens starting every 256 (``q_sim_prune``,
  `q_similarity_prune`), and its KV-cache path on the post-RoPE queries (hook_rot_q) of the last
  32 prompt tokens (``q_sim_post``, and `tappa_decision`). ``q_sim_pre_windowed`` is ours: pre-RoPE,
  windows of 32 every 16 positions; ``lag1_sim`` the lag-1 cosine (TAPPA's Prop. 4.1).
* Pattern class per head: re-access (vertical lines: a few fixed keys take the mass),
  sequential (one relative offset takes it: previous-token, induction), seasonal (stripes at
  the multiples of a period P >= 2), unpredictable (none of these). Computed from the
  recorder's per-key statistics and the attention-by-offset profile h[d] = mean_t A[t, t-d],
  so it runs at long context; each label has a confidence (the winning share). The seasonal
  share is the share of *all* the head's attention on the stripes over the whole context
  (`offset_shares`), so a fixed periodic pattern gets the same class and period at any length.
* Spectral view: the head as a linear filter, H(w) = sum_d h[d] exp(-i w d) (magnitude and
  phase, a Bode plot), and the share of the attention logit carried by each RoPE channel
  pair (a dominant pair i* predicts a period 2 pi / theta_i*).
* Query predictability (after AxonAD): a ridge AR(p) predictor per head fitted on the first
  part of each prompt's pre-RoPE queries, scored by the cosine on the rest, beside the
  persistence predictor (lag-1 similarity).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.analysis.scores import HeadScores
from workbench.errors import InputDataError
from workbench.kernels import offset_profile
from workbench.models.attention_spec import layer_windows
from workbench.models.hooks import temporary_hooks
from workbench.models.model import Model
from workbench.record import AttentionRecorder

CLASSES = ("re-access", "sequential", "seasonal", "unpredictable")


@dataclass(frozen=True)
class TemporalConfig:
    """Defaults: TAPPA's KV path (window T = 32 queries); offsets up to 64; an AR(4) query
    predictor (AxonAD-style history-only prediction, linear); class thresholds are ours
    (TAPPA publishes none) and are stated in `classify_profile`."""

    window: int = 32  # q_sim_pre_windowed / q_sim_post: windows of this many queries ...
    stride: int = 16  # ... starting every this many
    prune_max_seq_len: int = 1024  # q_sim_prune: TAPPA's pruning path, chunks of up to 1024 tokens ...
    prune_stride: int = 256  # ... starting every 256 (Prune/compute_q_similarity.py defaults)
    max_offset: int = 64  # offsets of the stored profile and of the sequential share (the seasonal share covers all)
    top_keys: int = 4  # re-access: share of all attention on the 4 most-attended keys
    min_share: float = 0.4  # below this for every class the head is "unpredictable"
    min_period: int = 2
    # the fundamental period explains at least (1 - this) of the best stripe mass (see classify_profile)
    period_tolerance: float = 0.1
    ar_order: int = 4
    ar_ridge: float = 1e-2
    fit_fraction: float = 0.5
    rope_pairs_sampled: int = 4096
    seed: int = 0


# -- q-similarity --------------------------------------------------------------------------------


def q_similarity(q: torch.Tensor, window: int, stride: int) -> np.ndarray:
    """[H] mean all-pairs off-diagonal cosine of queries in windows of ``window`` positions.

    ``q`` is [N, H, D] (one prompt). Windows start every ``stride`` positions; a prompt shorter
    than the window uses one window of all its positions.
    """
    n = q.shape[0]
    t = min(window, n)
    if t < 2:
        raise InputDataError(f"a prompt of {n} token(s) is too short for q-similarity", "use prompts of at least 2 tokens")
    qn = q.double() / q.double().norm(dim=-1, keepdim=True).clamp_min(1e-8)  # [N, H, D]
    starts = range(0, n - t + 1, max(1, stride))
    values = []
    for s in starts:
        w = qn[s : s + t].transpose(0, 1)  # [H, T, D]
        total = w.sum(1)  # sum of unit vectors: |sum|^2 = sum_{t,s} cos
        values.append(((total * total).sum(-1) - t) / (t * (t - 1)))
    return torch.stack(values).mean(0).numpy()


def q_similarity_prune(q: torch.Tensor, max_seq_len: int = 1024, stride: int = 256) -> np.ndarray:
    """[chunks, H] TAPPA's pruning-path q-similarity of one prompt, one row per chunk.

    As ``ShortGPTModel.eval_q_similarity`` cuts a text: chunks ``q[s : s + max_seq_len]`` for every
    ``s`` in ``range(0, N, stride)`` (the later ones shorter, down to the text's tail), each scored by
    the mean cosine over its ordered off-diagonal pairs, with q / (|q| + 1e-8) as in
    ``_accumulate_q_similarity``. TAPPA averages the rows of every chunk of every text (then over
    heads for its layer score). Differences from it: float64 instead of float32, and chunks of a
    single token (TAPPA's 0/0) are left out. ``q`` is [N, H, D], pre-RoPE (hook_q).
    """
    n = q.shape[0]
    if n < 2:
        raise InputDataError(f"a prompt of {n} token(s) is too short for q-similarity", "use prompts of at least 2 tokens")
    qn = q.double() / (q.double().norm(dim=-1, keepdim=True) + 1e-8)  # [N, H, D]
    rows = []
    for s in range(0, n, max(1, stride)):
        chunk = qn[s : s + max_seq_len]
        t = chunk.shape[0]
        if t < 2:
            continue
        total = chunk.sum(0)  # [H, D]: |sum of unit vectors|^2 = sum over all (t, s) pairs of the cosine
        rows.append(((total * total).sum(-1) - t) / (t * (t - 1)))  # minus the diagonal, counted as t (TAPPA)
    return torch.stack(rows).numpy()


def lag_similarity(q: torch.Tensor, lag: int = 1) -> np.ndarray:
    """[H] mean cosine between queries ``lag`` positions apart (q: [N, H, D])."""
    a, b = q[lag:].double(), q[:-lag].double()
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).mean(0).numpy()


# -- pattern classification ----------------------------------------------------------------------


@dataclass(frozen=True)
class PatternLabel:
    label: str
    confidence: float
    offset: int | None = None  # sequential: the dominant offset
    period: int | None = None  # seasonal: the period
    shares: dict[str, float] = field(default_factory=dict)


def vertical_share(col_sum: np.ndarray, n_tokens: int, top_keys: int) -> float:
    """Share of all attention (n_tokens queries x 1) landing on the ``top_keys`` most-attended keys."""
    return float(np.sort(np.asarray(col_sum))[::-1][:top_keys].sum() / max(n_tokens, 1))


def offset_shares(profile: np.ndarray, n_tokens: int) -> np.ndarray:
    """[..., N] share of all the head's attention at each offset d over the whole context:
    h[d] x (queries that reach d) / (all queries) = sum_t A[t, t-d] / N, from the whole-context
    profile h[d] = mean_t A[t, t-d] (d = 0..N-1, causal, N queries). Sums to 1 over d."""
    h = np.asarray(profile, dtype=np.float64)
    n = int(n_tokens)
    if h.shape[-1] != n:
        raise ValueError(f"the profile has {h.shape[-1]} offsets for {n} tokens: it must cover the whole context")
    return h * (n - np.arange(n)) / n


def seasonal_period(stripes: np.ndarray, cfg: TemporalConfig = TemporalConfig()) -> tuple[float, int | None]:
    """(share of all attention on the stripes, period) of a whole-context share profile (`offset_shares`).

    A period P >= ``min_period`` has real stripes when, among its multiples m >= 1, the second
    strongest holds >= 20% of the strongest (several parallel stripes, not one diagonal), their mean
    is >= 3x the mean of the other offsets >= 1, and together they hold more than offset 0 (stripes,
    not a self-attention head with faint echoes). Its mass is the share on offsets mP, m >= 0 (the
    query's own token is on the m = 0 stripe). Among real periods, the *fundamental* is the largest
    whose mass is within ``period_tolerance`` of the best: every divisor of the true period sums at
    least as much mass (stripes every 8 tokens are also "every 2"). O(N log N) per head.
    """
    share = np.asarray(stripes, dtype=np.float64)
    n = len(share)
    rest_total = share[1:].sum()
    candidates: dict[int, float] = {}
    for p in range(cfg.min_period, n // 2 + 1):
        multiples = share[p::p]
        if len(multiples) < 2:
            continue
        top_two = np.partition(multiples, len(multiples) - 2)[-2:]
        n_others = (n - 1) - len(multiples)
        others_mean = (rest_total - multiples.sum()) / n_others if n_others > 0 else 0.0
        if top_two[0] >= 0.2 * top_two[1] and multiples.mean() >= 3.0 * others_mean and multiples.sum() > share[0]:
            candidates[p] = float(multiples.sum() + share[0])
    if not candidates:
        return 0.0, None
    best_mass = max(candidates.values())
    period = max(p for p, mass in candidates.items() if mass >= (1.0 - cfg.period_tolerance) * best_mass)
    return candidates[period], period


def classify_profile(
    profile: np.ndarray, vertical: float, cfg: TemporalConfig = TemporalConfig(), stripes: np.ndarray | None = None
) -> PatternLabel:
    """Label one head from its offset profile h[d] (d = 0..R-1), its vertical share and its
    whole-context share profile ``stripes`` (`offset_shares`; without it ``profile`` is read as one).

    Shares (each a fraction of the head's attention, in [0, 1]):
    * re-access  = mass on the ``top_keys`` most-attended keys / all mass (vertical lines);
    * sequential = max_d h[d] over the R offsets of ``profile`` (one diagonal, among the queries that
      reach it: a previous-token or induction head scores the same at any length);
    * seasonal   = share of all attention on the stripes of the fundamental period (`seasonal_period`),
      over the whole context, so the class and period of a fixed periodic pattern do not depend on
      the prompt length (a sum of h over the first R offsets did: it falls as 1/N).
    The largest share wins if it is >= ``min_share``; otherwise "unpredictable" with confidence
    1 - (largest share).
    """
    h = np.asarray(profile, dtype=np.float64)
    vertical = float(vertical)
    offset = int(np.argmax(h))
    sequential = float(h[offset])
    seasonal, period = seasonal_period(h if stripes is None else stripes, cfg)
    # h[d] averages over the queries that reach offset d: clip a share read from it
    shares = {"re-access": min(vertical, 1.0), "sequential": min(sequential, 1.0), "seasonal": min(seasonal, 1.0)}
    best = max(shares, key=shares.__getitem__)
    if shares[best] < cfg.min_share:
        return PatternLabel("unpredictable", 1.0 - shares[best], shares=shares)
    if best == "seasonal" and sequential >= seasonal:
        best = "sequential"
    return PatternLabel(
        best, shares[best], offset if best == "sequential" else None, period if best == "seasonal" else None, shares
    )


def period_copy_share(profile: np.ndarray, period: int) -> float:
    """Attention mass at lags P-1, 2P-1, ... of the offset profile h[d]: on text of period P, the
    keys whose *next* token is the one to predict (a head that copies one or more periods back).

    Such a head draws a single diagonal at lag P-1 when it copies from the latest period only, so
    the shape classifier calls it sequential; this share ties it to the input's period instead.
    """
    if period < 2:
        raise ValueError(f"period must be >= 2, got {period}")
    h = np.asarray(profile, dtype=np.float64)
    return float(min(h[period - 1 :: period].sum(), 1.0))


# -- RoPE channels and the spectral view ------------------------------------------------------


def rope_frequencies(rope_dims: int, base: float) -> np.ndarray:
    """theta_i = base^(-2i/dims): the unscaled textbook frequencies (the model's own are in
    ``model.geometry.positional.layer_inv_freq``, which the family uses)."""
    half = rope_dims // 2
    return base ** (-2.0 * np.arange(half) / rope_dims)


def rope_periods_per_layer(positional: Any) -> np.ndarray:
    """[L, pairs] period in tokens of each rotated pair of each layer, as the model rotates (NaN-padded)."""
    freqs = positional.layer_inv_freq
    width = max(len(f) for f in freqs)
    out = np.full((len(freqs), width), np.nan)
    for layer, f in enumerate(freqs):
        out[layer, : len(f)] = 2 * np.pi / np.asarray(f, dtype=np.float64)
    return out


def rope_channel_shares(
    q: torch.Tensor, k: torch.Tensor, rope_dims: int, n_samples: int, seed: int, layout: str = "half"
) -> np.ndarray:
    """[H, rope_dims/2] share of E|q^(i) . k^(i)| per RoPE channel pair over sampled causal pairs.

    q: [H, N, D], k: [H, N, D] post-RoPE (keys already expanded to query heads). Pair i is channels
    (i, i + dims/2) for the rotate-half layout (Llama) and (2i, 2i + 1) for the interleaved one
    (GPT-J, Cohere).
    """
    n = q.shape[1]
    g = torch.Generator().manual_seed(seed)
    ti = torch.randint(0, n, (n_samples,), generator=g)
    tj = (torch.rand(n_samples, generator=g) * (ti + 1).double()).long().clamp(max=n - 1)
    half = rope_dims // 2
    qa, ka = q[:, ti].double(), k[:, tj].double()  # [H, S, D]
    if layout == "interleaved":
        prod = qa[..., :rope_dims] * ka[..., :rope_dims]
        contrib = prod[..., 0::2] + prod[..., 1::2]  # [H, S, half]
    else:
        contrib = qa[..., :half] * ka[..., :half] + qa[..., half:rope_dims] * ka[..., half:rope_dims]  # [H, S, half]
    usage = contrib.abs().mean(1)
    return (usage / usage.sum(-1, keepdim=True).clamp_min(1e-30)).numpy()


def transfer_function(profile: np.ndarray, n_freq: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(omega, |H| in dB, unwrapped phase) of H(w) = sum_d h[d] e^{-i w d}, w in (0, pi]."""
    h = np.asarray(profile, dtype=np.float64)
    omega = np.linspace(np.pi / n_freq, np.pi, n_freq)
    d = np.arange(len(h))
    resp = (h[None, :] * np.exp(-1j * omega[:, None] * d[None, :])).sum(-1)
    return omega, 20 * np.log10(np.abs(resp).clip(1e-12)), np.unwrap(np.angle(resp))


# -- query predictability -----------------------------------------------------------------------


def ar_predictability(q: torch.Tensor, order: int, ridge: float, fit_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Per head (cosine of a ridge AR(order) forecast, cosine of persistence) on held-out positions.

    q: [N, H, D] pre-RoPE queries of one prompt. Fit on the first ``fit_fraction`` of positions,
    evaluate on the rest; both predictors see only the past.
    """
    n, n_heads, d = q.shape
    split = int(n * fit_fraction)
    if split <= order + 1 or n - split < 2:
        raise InputDataError(f"{n} tokens are too few for an AR({order}) fit", "use longer prompts")
    x = q.double()  # on the queries' own device: the fits of every head are one batched solve there
    lagged = torch.cat([x[order - l - 1 : n - l - 1] for l in range(order)], dim=-1)  # [N-order, H, D*order]
    target = x[order:]
    ones = torch.ones(*lagged.shape[:-1], 1, dtype=torch.float64, device=x.device)
    feats = torch.cat([lagged, ones], -1).transpose(0, 1)  # [H, N-order, F]
    target_h = target.transpose(0, 1)  # [H, N-order, D]
    fit = slice(0, split - order)
    test = slice(split - order, n - order)
    a, y = feats[:, fit], target_h[:, fit]
    reg = ridge * torch.eye(a.shape[-1], dtype=torch.float64, device=x.device)
    w = torch.linalg.solve(a.transpose(1, 2) @ a + reg, a.transpose(1, 2) @ y)  # [H, F, D]
    pred = feats[:, test] @ w
    cos = torch.nn.functional.cosine_similarity
    ar_cos = cos(pred, target_h[:, test], dim=-1).mean(-1)
    persist_cos = cos(lagged[test, :, :d].transpose(0, 1), target_h[:, test], dim=-1).mean(-1)
    return ar_cos.cpu().numpy(), persist_cos.cpu().numpy()


# -- the family ---------------------------------------------------------------------------------------


@dataclass
class TemporalReport:
    # q_sim_prune, q_sim_pre_windowed, q_sim_post, lag1_sim, ar_cos, persistence_cos, class shares, confidence
    scores: HeadScores
    labels: dict[tuple[int, int], PatternLabel]
    profiles: np.ndarray  # [L, H, R] mean attention by offset (R = max_offset)
    rope_shares: np.ndarray | None  # [L, H, pairs]
    rope_periods: np.ndarray | None  # [L, pairs] period of each pair as the model rotates it
    layer_q_sim: np.ndarray  # [L] mean over heads of q_sim_prune (TAPPA's per-layer pruning score)
    config: TemporalConfig = field(default_factory=TemporalConfig)

    def heads_with(self, label: str) -> list[tuple[int, int]]:
        return sorted(h for h, lab in self.labels.items() if lab.label == label)


def _profile_chunk(max_offset: int, n_heads: int, budget: int = 1 << 22) -> int:
    """Query chunk of `offset_profile` keeping its [chunk, max_offset] block per head near ``budget`` values."""
    return int(min(256, max(16, budget // max(1, max_offset * n_heads))))


def whole_context_profile(
    q_rot: torch.Tensor, k_rot: torch.Tensor, lse: torch.Tensor, scale: float, window: int | None = None
) -> np.ndarray:
    """[H, N] h[d] = mean_t A[t, t-d] for every offset of one prompt (q_rot [1, Hq, N, D], k_rot
    [1, Hkv, N, D], the causal LSE [1, Hq, N]); offsets outside a sliding ``window`` get 0 (keys
    there are masked; `offset_profile` itself knows no window). Memory O(N) per query chunk."""
    n = q_rot.shape[2]
    reach = n if window is None else min(n, int(window))
    prof = offset_profile(q_rot, k_rot, lse, scale=scale, max_offset=reach, chunk=_profile_chunk(reach, q_rot.shape[1]))
    out = np.zeros((q_rot.shape[1], n))
    out[:, :reach] = prof[0].double().numpy()
    return out


def analyze_temporal(model: Model, prompts: Sequence[torch.Tensor], cfg: TemporalConfig = TemporalConfig()) -> TemporalReport:
    """Record each prompt once and compute every temporal statistic per head."""
    if not prompts:
        raise InputDataError("no prompts to analyse", "give at least one prompt")
    geo = model.geometry
    L, H = geo.n_layers, geo.n_heads
    rope = geo.positional.kind == "rope"
    rope_dims = geo.positional.rope_dims
    windows = layer_windows(model.hf_model.config, L)
    acc: dict[str, list[np.ndarray]] = {k: [] for k in ("q_pre", "q_post", "lag1", "ar", "persist")}
    prune_rows: list[list[np.ndarray]] = [[] for _ in range(L)]  # per layer: [chunks, H] of every prompt
    profiles, col_sums, n_tok, rope_sh = [], [], [], []
    stripe_sum = np.zeros((L, H, 0))  # summed over prompts; shorter prompts add 0 beyond their length
    captured: dict[int, torch.Tensor] = {}  # the pre-RoPE queries of the layer running now
    per_layer_out: dict[int, dict[str, Any]] = {}

    def grab(layer: int) -> Callable[[torch.Tensor, Any], None]:
        def fn(t: torch.Tensor, hook: Any) -> None:
            captured[layer] = t.detach()[0].float().cpu()  # [N, H, D]

        return fn

    def on_layer(l: int, stats: Any, q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
        """Every statistic of layer ``l`` while the pass runs; its queries and keys are then dropped,
        so the host holds one layer's q/k at a time (O(N x d)), never every layer's."""
        q_pre = captured.pop(l)
        q_rot, k_rot = q.float().cpu(), k.float().cpu()
        n = q_rot.shape[2]
        out: dict[str, Any] = {}
        full = whole_context_profile(q_rot, k_rot, stats.lse.float().cpu(), scale, windows[l])  # [H, N]
        out["prof"] = full[:, : cfg.max_offset]
        out["stripes"] = offset_shares(full, n)
        out["prune"] = q_similarity_prune(q_pre, cfg.prune_max_seq_len, cfg.prune_stride)
        out["q_pre"] = q_similarity(q_pre, cfg.window, cfg.stride)
        out["q_post"] = q_similarity(q_rot[0].transpose(0, 1), cfg.window, cfg.stride)
        out["lag1"] = lag_similarity(q_pre)
        out["ar"], out["persist"] = ar_predictability(q_pre, cfg.ar_order, cfg.ar_ridge, cfg.fit_fraction)
        if rope:
            assert rope_dims is not None  # a RoPE scheme always says how many dims it rotates
            group = q_rot.shape[1] // k_rot.shape[1]
            k_exp = k_rot[0].repeat_interleave(group, dim=0)
            out["rope"] = rope_channel_shares(
                q_rot[0], k_exp, rope_dims, cfg.rope_pairs_sampled, cfg.seed, geo.positional.pair_layout
            )
        per_layer_out[l] = out

    points = [(model.bridge.blocks[l].attn.hook_q, grab(l)) for l in range(L)]
    for prompt in prompts:
        tokens = prompt.view(1, -1)
        captured.clear()
        per_layer_out.clear()
        with temporary_hooks(points), AttentionRecorder(model, on_layer=on_layer) as rec, torch.no_grad():
            model.logits(tokens.to(model.device))
        record = rec.last
        n = tokens.shape[1]
        prof = np.zeros((L, H, cfg.max_offset))
        stripes = np.zeros((L, H, n))
        shares = []
        cols = record.stack("col_sum")[:, 0].double().numpy()  # [L, H, N] (every layer recorded)
        for l in range(L):
            out = per_layer_out[l]
            prof[l, :, : min(n, cfg.max_offset)] = out["prof"]
            stripes[l] = out["stripes"]
            prune_rows[l].append(out["prune"])
            for key in ("q_pre", "q_post", "lag1", "ar", "persist"):
                acc[key].append(out[key])
            if rope:
                shares.append(out["rope"])
        profiles.append(prof)
        if n > stripe_sum.shape[-1]:
            stripe_sum = np.pad(stripe_sum, ((0, 0), (0, 0), (0, n - stripe_sum.shape[-1])))
        stripe_sum[..., :n] += stripes
        col_sums.append(cols)
        n_tok.append(tokens.shape[1])
        if rope:
            rope_sh.append(np.stack(shares))
    n_prompts = len(prompts)

    def per_layer(key: str) -> np.ndarray:
        arr = np.array(acc[key]).reshape(n_prompts, L, H)
        return arr.mean(0)

    mean_profile = np.mean(profiles, 0)
    mean_stripes = stripe_sum / n_prompts
    labels: dict[tuple[int, int], PatternLabel] = {}
    conf = np.zeros((L, H))
    share_maps = {c: np.zeros((L, H)) for c in ("re-access", "sequential", "seasonal")}
    for l in range(L):
        for h in range(H):
            vertical = float(np.mean([vertical_share(c[l, h], n, cfg.top_keys) for c, n in zip(col_sums, n_tok)]))
            lab = classify_profile(mean_profile[l, h], vertical, cfg, mean_stripes[l, h])
            labels[(l, h)] = lab
            conf[l, h] = lab.confidence
            for c in share_maps:
                share_maps[c][l, h] = lab.shares[c]
    scores = HeadScores("temporal", L, H)
    prune = np.stack([np.concatenate(rows).mean(0) for rows in prune_rows])  # TAPPA: mean over all chunks of all texts
    scores.add(
        "q_sim_prune",
        prune,
        f"TAPPA q-similarity as its pruning path computes it: pre-RoPE, whole chunks of up to {cfg.prune_max_seq_len} "
        f"tokens every {cfg.prune_stride}",
    )
    scores.add("q_sim_pre_windowed", per_layer("q_pre"), f"q-similarity, pre-RoPE, windows of {cfg.window} every {cfg.stride}")
    scores.add(
        "q_sim_post",
        per_layer("q_post"),
        f"q-similarity, post-RoPE as TAPPA's KV path (which scores the last {cfg.window} queries only), windows of "
        f"{cfg.window} every {cfg.stride}",
    )
    scores.add("lag1_sim", per_layer("lag1"), "mean cosine of consecutive pre-RoPE queries")
    scores.add("ar_cos", per_layer("ar"), f"held-out cosine of a ridge AR({cfg.ar_order}) query forecast")
    scores.add("persistence_cos", per_layer("persist"), "held-out cosine of the previous query as forecast")
    for c, m in share_maps.items():
        scores.add(f"{c}_share", m, f"share of attention explained as {c}")
    scores.add("label_confidence", conf, "confidence of the pattern label")
    scores.add(
        "label_code",
        np.array([[CLASSES.index(labels[(l, h)].label) for h in range(H)] for l in range(L)]),
        "pattern label: 0 re-access, 1 sequential, 2 seasonal, 3 unpredictable",
    )
    rope_shares = np.mean(rope_sh, 0) if rope else None
    periods = rope_periods_per_layer(geo.positional) if rope and geo.positional.layer_inv_freq else None
    return TemporalReport(scores, labels, mean_profile, rope_shares, periods, prune.mean(1), cfg)


def period_channel(report: TemporalReport, head: tuple[int, int]) -> tuple[int, float, float] | None:
    """For a seasonal head: the RoPE pair whose period (or a multiple of it) best matches the
    head's period, with that pair's period and its share of the head's logit."""
    lab = report.labels[head]
    if lab.period is None or report.rope_periods is None or report.rope_shares is None:
        return None
    periods = report.rope_periods[head[0]] if report.rope_periods.ndim == 2 else report.rope_periods
    mismatch = np.abs(np.log(periods / lab.period))
    i = int(np.nanargmin(mismatch))
    return i, float(periods[i]), float(report.rope_shares[head[0], head[1], i])


# -- the decision: TAPPA's per-layer KV budgets from q-similarity vs uniform ---------------------------


@dataclass
class BudgetDecision:
    """TAPPA's q-similarity budgets vs uniform budgets at the same total, same eviction (CAKE's), per
    average prefix budget: accuracy of each, and the paired per-trial difference with a 95% interval
    (normal approximation over trials; with n trials the interval is +-1.96 sd / sqrt(n))."""

    averages: list[int]  # prefix keys kept per layer on average
    tappa_accuracy: list[float]
    uniform_accuracy: list[float]
    diff_mean: list[float]  # tappa - uniform, per trial, averaged
    diff_low: list[float]
    diff_high: list[float]
    full_accuracy: float
    n_trials: int
    context_tokens: int
    mean_q_sim: list[float]  # per layer, over trials

    def to_dict(self) -> dict:
        return dict(self.__dict__, method="TAPPA (CAKE eviction, 1 - post-RoPE q-sim layer budgets) vs uniform layer budgets")


@torch.no_grad()
def tappa_decision(model: Model, trials: Sequence[Any], averages: Sequence[int], tappa: Any = None) -> BudgetDecision:
    """Does TAPPA's per-layer budget beat a uniform one on this model's needle task?

    For each trial: a full prefill, then the answer decoded against the keys each policy keeps
    (`workbench.interventions.kv_eviction`), teacher-forced (the first answer token comes from the
    prefill itself, as in a real cache). Both policies keep the same total number of prefix keys.
    """
    from workbench.analysis.retrieval import answer_accuracy
    from workbench.interventions.kv_eviction import (
        TappaConfig,
        evicted_cache,
        kept_keys,
        prefill_view,
        tappa_budgets,
        uniform_budgets,
    )

    cfg = tappa or TappaConfig()
    geo = model.geometry
    right = {"tappa": np.zeros((len(averages), len(trials))), "uniform": np.zeros((len(averages), len(trials)))}
    q_sims = []
    for t, trial in enumerate(trials):
        view = prefill_view(model, trial.prompt, cfg.window)
        # TAPPA's preference: post-RoPE q-similarity of the prompt's last window, averaged over heads
        q_sim = np.array([float(q_similarity(q.transpose(0, 1), q.shape[1], q.shape[1]).mean()) for q in view.window_queries])
        for a, avg in enumerate(averages):
            total = int(avg) * geo.n_layers
            budgets = tappa_budgets(view, q_sim, total, cfg)
            for name, b in (("tappa", budgets), ("uniform", uniform_budgets(geo.n_layers, total, view, cfg))):
                with evicted_cache(model, kept_keys(view, b, geo.group_size, cfg), view.n_tokens):
                    right[name][a, t] = answer_accuracy(model, [trial])
        q_sims.append(q_sim)
    diff = right["tappa"] - right["uniform"]
    n = len(trials)
    half = 1.96 * diff.std(1, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(averages), np.nan)
    return BudgetDecision(
        [int(a) for a in averages],
        right["tappa"].mean(1).tolist(),
        right["uniform"].mean(1).tolist(),
        diff.mean(1).tolist(),
        (diff.mean(1) - half).tolist(),
        (diff.mean(1) + half).tolist(),
        answer_accuracy(model, list(trials)),
        n,
        int(np.mean([t.context_len for t in trials])),
        np.mean(q_sims, 0).tolist(),
    )


def fmt_period(p: float) -> str:
    return "inf" if math.isinf(p) else f"{p:.1f}"
