"""Safety heads: which heads carry refusal (Ships and Sahara, Zhou et al., ICLR 2025).

* Ships for one query and one head: KL(p_base || p_ablated) of the next-token distribution
  at the last prompt token, the head ablated by "undifferentiated attention" (its query
  scaled by epsilon before RoPE, per query head, so GQA siblings are untouched).
* Dataset-level Ships: the mean over queries.
* Sahara: stack the final-norm output at the last prompt token over the dataset (not
  centred), take the leading left singular vectors, and score a head group by the principal
  angles between the base and the ablated subspaces; grow the group greedily, always against
  the unablated base (Algorithm 1; the fixed SVD version, not the pre-2025-06 bug).
* Attack success rate: greedy generation of a fixed number of tokens, judged by
  `workbench.analysis.refusal.RefusalJudge`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.analysis.refusal import RefusalJudge, ShipsPaperJudge, Verdict, attack_success_rate
from workbench.analysis.scores import HeadScores
from workbench.errors import InputDataError
from workbench.interventions.ablation import ablate_rows
from workbench.models.generate import last_logits_kwargs
from workbench.models.heads import Head
from workbench.models.hooks import temporary_hooks
from workbench.models.model import Model
from workbench.record.decode import generate


@dataclass(frozen=True)
class SafetyConfig:
    """Defaults from the Ships/Sahara code: epsilon 1e-5 on the query, rank 1, groups of up
    to 3 heads (the paper's best size); the KL adds 1e-12 inside the logs as the code does.
    ``max_rows``: batch rows per pass of a sweep ((head, request) pairs), which bounds its memory."""

    epsilon: float = 1e-5
    kl_eps: float = 1e-12
    rank: int = 1
    max_group: int = 3
    max_new_tokens: int = 8
    judge: RefusalJudge | ShipsPaperJudge = field(default_factory=RefusalJudge)
    max_rows: int = 64


#: one batch row of a sweep: (prompt index, heads ablated in that row)
Row = tuple[int, tuple[Head, ...]]


def _check_prompts(prompts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if not prompts:
        raise InputDataError("no prompts given for the safety analysis", "give at least one harmful prompt")
    return [p.view(-1) for p in prompts]


def right_padding_is_exact(model: Model) -> bool:
    """Right padding leaves every real position's numbers unchanged when attention is causal (no real
    token sees the padding on its right, positions stay 0..n-1); bidirectional models must not pad."""
    return str(getattr(model.bridge.cfg, "attention_dir", "causal")) == "causal"


def _chunks(lengths: Sequence[int], rows: Sequence[Row], max_rows: int, pad: bool) -> list[list[int]]:
    """Row indices per pass: consecutive runs of ``max_rows`` when padding is exact, else per exact
    prompt length (each length's rows in order), so no pass ever pads a model that cannot be padded."""
    size = max(1, int(max_rows))
    if pad:
        order = list(range(len(rows)))
        return [order[i : i + size] for i in range(0, len(order), size)]
    groups: dict[int, list[int]] = {}
    for i, (q, _) in enumerate(rows):
        groups.setdefault(lengths[q], []).append(i)
    return [idx[i : i + size] for idx in groups.values() for i in range(0, len(idx), size)]


def _keep_kwargs(model: Model, positions: torch.Tensor) -> dict[str, Any]:
    """Logits only at ``positions`` when the wrapped model can slice them (``logits_to_keep``)."""
    return {"logits_to_keep": positions} if last_logits_kwargs(model) else {}


@torch.no_grad()
def _sweep(
    model: Model,
    prompts: Sequence[torch.Tensor],
    rows: Sequence[Row],
    cfg: SafetyConfig,
    logprobs: bool = True,
    reps: bool = False,
) -> Iterator[tuple[list[int], torch.Tensor | None, torch.Tensor | None]]:
    """Run ``rows`` in right-padded batches of at most ``cfg.max_rows``, row r with its own heads
    ablated (uniform attention); yield (row indices, [n, V] last-token log-probs in float64 on the
    model's device, [n, d_model] final-norm outputs in float64 on the CPU), each read at its row's own
    last real token."""
    lengths = [int(p.numel()) for p in prompts]
    pad = right_padding_is_exact(model)
    box: dict[str, torch.Tensor] = {}

    def grab(t: torch.Tensor, hook: Any) -> None:
        box["h"] = t.detach()

    points = [(model.bridge.ln_final.hook_out, grab)] if reps else []
    for chunk in _chunks(lengths, rows, cfg.max_rows, pad):
        qs = [rows[i][0] for i in chunk]
        width = max(lengths[q] for q in qs)
        # pad with each row's own last token: real ids only, never the pad id a bridge might mask
        batch = torch.stack([torch.cat([prompts[q], prompts[q][-1:].expand(width - lengths[q])]) for q in qs])
        last = torch.tensor([lengths[q] - 1 for q in qs])
        keep, where = torch.unique(last, return_inverse=True)
        heads = [rows[i][1] for i in chunk]
        ablation = ablate_rows(model, heads, "uniform", epsilon=cfg.epsilon) if any(heads) else contextlib.nullcontext()
        box.clear()
        kwargs = _keep_kwargs(model, keep.to(model.device))
        with ablation, temporary_hooks(points):
            logits = model.bridge(batch.to(model.device), **kwargs)
        at = torch.arange(len(chunk), device=logits.device)
        logp = None
        if logprobs:
            logp = torch.log_softmax(logits[at, (where if kwargs else last).to(logits.device)].double(), -1)
        final = box["h"][at.to(box["h"].device), last.to(box["h"].device)].double().cpu() if reps else None
        yield chunk, logp, final


def _base(
    model: Model, prompts: list[torch.Tensor], cfg: SafetyConfig, logprobs: bool = True, reps: bool = False
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Unablated ([Q, V] log-probs, [Q, d_model] final-norm outputs) from the same ragged batches."""
    out_logp: torch.Tensor | None = None
    out_reps: torch.Tensor | None = None
    for chunk, logp, final in _sweep(model, prompts, [(q, ()) for q in range(len(prompts))], cfg, logprobs, reps):
        if logp is not None:
            if out_logp is None:
                out_logp = torch.empty(len(prompts), logp.shape[-1], dtype=torch.float64)
            out_logp[chunk] = logp.cpu()
        if final is not None:
            if out_reps is None:
                out_reps = torch.empty(len(prompts), final.shape[-1], dtype=torch.float64)
            out_reps[chunk] = final
    return out_logp, out_reps


@torch.no_grad()
def last_token_logprobs(model: Model, prompts: Sequence[torch.Tensor], cfg: SafetyConfig = SafetyConfig()) -> torch.Tensor:
    """[Q, V] log-probabilities of the next token after each prompt (ragged batches, right padded)."""
    logp, _ = _base(model, _check_prompts(prompts), cfg)
    assert logp is not None
    return logp


def kl_divergence(logp_base: torch.Tensor, logp_other: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL(p || q) per row, with eps added inside the logs as the Ships code does."""
    p, q = logp_base.exp(), logp_other.exp()
    return ((p + eps) * ((p + eps).log() - (q + eps).log())).sum(-1)


@torch.no_grad()
def final_representations(model: Model, prompts: Sequence[torch.Tensor], cfg: SafetyConfig = SafetyConfig()) -> torch.Tensor:
    """[Q, d_model] final-norm output (with its gain) at the last prompt token (ragged batches)."""
    _, reps = _base(model, _check_prompts(prompts), cfg, logprobs=False, reps=True)
    assert reps is not None
    return reps


def _by_length_order(prompts: Sequence[torch.Tensor]) -> list[int]:
    """Prompt indices shortest first: a head's rows then pad little against each other."""
    return sorted(range(len(prompts)), key=lambda q: (int(prompts[q].numel()), q))


@dataclass
class HeadSweep:
    """One batched pass over (head, request) rows: Ships per query and, when asked, Sahara's step-1
    angles (the same rows: the head alone ablated, against the unablated base)."""

    ships: np.ndarray  # [Q, L, H], NaN for heads not swept
    angles: np.ndarray | None  # [L, H] subspace angle with the head ablated, NaN for heads not swept
    base_reps: torch.Tensor | None = None  # [Q, d_model] the unablated final-norm outputs (with angles)


def _group_sweep(
    model: Model,
    prompts: list[torch.Tensor],
    groups: Sequence[tuple[Head, ...]],
    cfg: SafetyConfig,
    base_logp: torch.Tensor | None,
    base_reps: torch.Tensor | None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray | None, list[float] | None]:
    """[Q, G] KLs against ``base_logp`` and G subspace angles against ``base_reps`` for each head group
    ablated over every prompt; rows are group-major, so a group's representations are dropped as soon
    as its last row is done."""
    order = _by_length_order(prompts)
    rows: list[Row] = [(q, g) for g in groups for q in order]
    n_q = len(prompts)
    kls = np.full((n_q, len(groups)), np.nan) if base_logp is not None else None
    angles: list[float] | None = [float("nan")] * len(groups) if base_reps is not None else None
    held: dict[int, dict[int, torch.Tensor]] = {}
    base_dev = base_logp.to(model.device) if base_logp is not None else None
    finished = 0
    for chunk, logp, reps in _sweep(model, prompts, rows, cfg, logprobs=kls is not None, reps=angles is not None):
        gs = [i // n_q for i in chunk]
        qs = [rows[i][0] for i in chunk]
        if kls is not None and logp is not None and base_dev is not None:
            kl = kl_divergence(base_dev[qs], logp, cfg.kl_eps).cpu().numpy()
            kls[qs, gs] = kl
        if angles is not None and reps is not None and base_reps is not None:
            for j, (g, q) in enumerate(zip(gs, qs)):
                held.setdefault(g, {})[q] = reps[j]
                if len(held[g]) == n_q:
                    mine = held.pop(g)
                    angles[g] = subspace_angle(base_reps, torch.stack([mine[i] for i in range(n_q)]), cfg.rank)
        done = sum(1 for i in chunk if i % n_q == n_q - 1)
        if progress and done:
            finished += done
            progress(finished, len(groups))
    return kls, angles


def sweep_heads(
    model: Model,
    prompts: Sequence[torch.Tensor],
    cfg: SafetyConfig = SafetyConfig(),
    heads: Sequence[Head] | None = None,
    angles: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> HeadSweep:
    """Ships of every (query, head), and with ``angles`` Sahara's step-1 angle of every head, from one
    batched sweep: rows are (head, request) pairs, ``cfg.max_rows`` per pass."""
    geo = model.geometry
    prompts = _check_prompts(prompts)
    chosen = list(heads) if heads is not None else geo.all_heads()
    base_logp, base_reps = _base(model, prompts, cfg, reps=angles)
    kls, angle_list = _group_sweep(model, prompts, [(h,) for h in chosen], cfg, base_logp, base_reps, progress)
    ships = np.full((len(prompts), geo.n_layers, geo.n_heads), np.nan)
    angle_map = np.full((geo.n_layers, geo.n_heads), np.nan) if angles else None
    for j, head in enumerate(chosen):
        assert kls is not None
        ships[:, head.layer, head.head] = kls[:, j]
        if angle_map is not None and angle_list is not None:
            angle_map[head.layer, head.head] = angle_list[j]
    return HeadSweep(ships, angle_map, base_reps)


def ships_scores(
    model: Model,
    prompts: Sequence[torch.Tensor],
    cfg: SafetyConfig = SafetyConfig(),
    heads: Sequence[Head] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """[Q, L, H] Ships of every (query, head); NaN for heads not asked for (batched: `sweep_heads`)."""
    return sweep_heads(model, prompts, cfg, heads, progress=progress).ships


def subspace_angle(base: torch.Tensor, other: torch.Tensor, rank: int = 1) -> float:
    """Sum of principal angles (degrees) between the leading ``rank`` left singular vectors."""
    u0 = torch.linalg.svd(base, full_matrices=False)[0][:, :rank]
    u1 = torch.linalg.svd(other, full_matrices=False)[0][:, :rank]
    cosines = torch.linalg.svdvals(u0.T @ u1).clamp(-1.0, 1.0)
    return float(torch.rad2deg(torch.arccos(cosines)).sum())


@dataclass
class SaharaResult:
    group: list[Head]
    step_scores: list[np.ndarray]  # per step: [L, H] angle of G + {head} (NaN for heads in G)


def sahara_search(
    model: Model,
    prompts: Sequence[torch.Tensor],
    cfg: SafetyConfig = SafetyConfig(),
    progress: Callable[[int, int], None] | None = None,
    first_step: HeadSweep | None = None,
) -> SaharaResult:
    """Greedy head-group search maximising the subspace angle against the unablated base. Each step is
    one batched sweep over (candidate, request) rows; ``first_step`` (a `sweep_heads(angles=True)` of
    every head over the same prompts: the same rows) gives the base and the first step's angles."""
    geo = model.geometry
    prompts = _check_prompts(prompts)
    if first_step is not None and (first_step.angles is None or first_step.base_reps is None):
        raise InputDataError("sahara_search got a head sweep without angles", "run sweep_heads(..., angles=True)")
    if first_step is not None and first_step.angles is not None and bool(np.isnan(first_step.angles).any()):
        raise InputDataError("sahara_search got a head sweep of some heads only", "sweep every head (heads=None)")
    base = first_step.base_reps if first_step is not None else None
    if base is None:
        base = final_representations(model, prompts, cfg)
    group: list[Head] = []
    steps: list[np.ndarray] = []
    total = cfg.max_group * geo.n_total_heads
    done = 0
    for step in range(cfg.max_group):
        candidates = [h for h in geo.all_heads() if h not in group]
        if step == 0 and first_step is not None and first_step.angles is not None:
            scores = np.array(first_step.angles, dtype=float)
        else:
            start = done

            def tick(i: int, n: int, _start: int = start) -> None:
                if progress:
                    progress(_start + i, total)

            _, angles = _group_sweep(model, prompts, [(*group, h) for h in candidates], cfg, None, base, tick)
            assert angles is not None
            scores = np.full((geo.n_layers, geo.n_heads), np.nan)
            for h, a in zip(candidates, angles):
                scores[h.layer, h.head] = a
        done += len(candidates)
        if progress:
            progress(done, total)
        best = np.unravel_index(np.nanargmax(scores), scores.shape)
        group.append(Head(int(best[0]), int(best[1])))
        steps.append(scores)
    return SaharaResult(group, steps)


# -- attack success rate --------------------------------------------------------------------------


@torch.no_grad()
def _generate_rows(
    model: Model,
    prompts: Sequence[torch.Tensor],
    rows: Sequence[Row],
    max_new_tokens: int,
    cfg: SafetyConfig,
    mode: str = "uniform",
    means: Any = None,
) -> list[str]:
    """Greedy answers of ``rows`` (KV-cached, on the instrumented core), each row with its own heads
    ablated: batches of equal-length prompts (generation is never padded), ``cfg.max_rows`` per batch."""
    lengths = [int(p.numel()) for p in prompts]
    out = [""] * len(rows)
    for chunk in _chunks(lengths, rows, cfg.max_rows, pad=False):
        batch = torch.stack([prompts[rows[i][0]] for i in chunk])
        heads = [rows[i][1] for i in chunk]
        ablation = (
            ablate_rows(model, heads, mode, epsilon=cfg.epsilon, means=means)  # type: ignore[arg-type]
            if any(heads)
            else contextlib.nullcontext()
        )
        with ablation:
            gen = generate(model, batch, max_new_tokens).tokens
        for row, i in enumerate(chunk):
            out[i] = model.tokenizer.decode(gen[row].tolist(), skip_special_tokens=True)
    return out


@torch.no_grad()
def generate_responses(
    model: Model, prompts: Sequence[torch.Tensor], max_new_tokens: int, cfg: SafetyConfig = SafetyConfig()
) -> list[str]:
    """Greedy answers to ``prompts`` with nothing ablated (equal-length batches)."""
    prompts = _check_prompts(prompts)
    return _generate_rows(model, prompts, [(q, ()) for q in range(len(prompts))], max_new_tokens, cfg)


@dataclass
class AsrResult:
    asr: float
    verdicts: list[Verdict]
    responses: list[str]
    heads: list[list[Head]]  # the heads ablated for each prompt


#: what `asr` ablates: one group for every prompt, or one group per prompt
HeadGroups = Sequence[Head] | Sequence[Sequence[Head]]


def _per_prompt(heads: HeadGroups, n: int) -> list[list[Head]]:
    items = list(heads)
    per_prompt = bool(items) and isinstance(items[0], (list, tuple)) and not isinstance(items[0], Head)
    groups: list[list[Head]] = [list(g) for g in items] if per_prompt else [list(items)] * n  # type: ignore[arg-type]
    if len(groups) != n:
        raise InputDataError(f"{len(groups)} head groups for {n} prompts", "give one group per prompt")
    return groups


def asr_many(
    model: Model,
    prompts: Sequence[torch.Tensor],
    conditions: Sequence[HeadGroups],
    cfg: SafetyConfig = SafetyConfig(),
    mode: str = "uniform",
    means: Any = None,
) -> list[AsrResult]:
    """`asr` of several ablation conditions in shared batches: rows are (condition, request) pairs,
    each row with its own heads ablated; a (request, heads) row that two conditions share runs once."""
    prompts = _check_prompts(prompts)
    per_condition = [_per_prompt(c, len(prompts)) for c in conditions]
    unique: dict[Row, int] = {}
    for groups in per_condition:
        for q, g in enumerate(groups):
            unique.setdefault((q, tuple(g)), len(unique))
    texts = _generate_rows(model, prompts, list(unique), cfg.max_new_tokens, cfg, mode, means)
    results = []
    for groups in per_condition:
        responses = [texts[unique[(q, tuple(g))]] for q, g in enumerate(groups)]
        verdicts = [cfg.judge.judge(r) for r in responses]
        results.append(AsrResult(attack_success_rate(verdicts), verdicts, responses, groups))
    return results


def asr(
    model: Model,
    prompts: Sequence[torch.Tensor],
    heads: HeadGroups = (),
    cfg: SafetyConfig = SafetyConfig(),
    mode: str = "uniform",
    means: Any = None,
) -> AsrResult:
    """ASR with ``heads`` ablated (uniform attention, as in Ships; or ``mode`` "mean"/"zero" with
    ``means`` from `head_means`, to tell a head that carries the decision from one whose uniform
    ablation leaves it intact). ``heads`` is one group for all prompts, or one group per prompt
    (Ships's query-level evaluation ablates each query's own heads)."""
    return asr_many(model, prompts, [heads], cfg, mode, means)[0]


@dataclass
class SafetyReport:
    scores: HeadScores  # ships_mean, ships_top1_share, sahara_step1_angle
    ships: np.ndarray  # [Q, L, H]
    sahara: SaharaResult | None
    config: SafetyConfig = field(default_factory=SafetyConfig)

    def top_heads_per_query(self) -> list[Head]:
        flat = self.ships.reshape(self.ships.shape[0], -1)
        n_heads = self.ships.shape[2]
        return [Head(int(i) // n_heads, int(i) % n_heads) for i in np.nanargmax(flat, axis=1)]


def analyze_safety(
    model: Model,
    harmful: Sequence[torch.Tensor],
    cfg: SafetyConfig = SafetyConfig(),
    run_sahara: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SafetyReport:
    geo = model.geometry
    sweep = sweep_heads(model, harmful, cfg, angles=run_sahara, progress=progress)
    ships = sweep.ships
    scores = HeadScores("safety", geo.n_layers, geo.n_heads)
    scores.add("ships_mean", np.nanmean(ships, 0), "dataset-level Ships: mean KL at the last prompt token")
    top = np.zeros((geo.n_layers, geo.n_heads))
    flat = ships.reshape(len(ships), -1)
    for i in np.nanargmax(flat, axis=1):
        top[i // geo.n_heads, i % geo.n_heads] += 1.0 / len(ships)
    scores.add("ships_top1_share", top, "share of queries whose top Ships head is this head")
    sahara = sahara_search(model, harmful, cfg, first_step=sweep) if run_sahara else None
    if sahara is not None:
        scores.add("sahara_angle", sahara.step_scores[0], "Sahara step-1 subspace angle (degrees) with the head ablated")
    return SafetyReport(scores, ships, sahara, cfg)


def top_head_overlap(a: HeadScores, b: HeadScores, metric: str = "ships_mean", k: int = 5) -> dict[str, Any]:
    """Overlap of two models' top-k safety heads (same architecture): shared heads and Jaccard."""
    if (a.n_layers, a.n_heads) != (b.n_layers, b.n_heads):
        raise InputDataError(
            f"models differ in shape: {a.n_layers}x{a.n_heads} vs {b.n_layers}x{b.n_heads}",
            "compare two models of the same architecture",
        )
    ta, tb = set(a.top(metric, k)), set(b.top(metric, k))
    return {
        "shared": sorted(ta & tb),
        "only_a": sorted(ta - tb),
        "only_b": sorted(tb - ta),
        "jaccard": len(ta & tb) / len(ta | tb),
    }


def random_heads(geo: Any, n: int, exclude: Sequence[Head] = (), seed: int = 0) -> list[Head]:
    rng = random.Random(seed)
    pool = [h for h in geo.all_heads() if h not in set(exclude)]
    return rng.sample(pool, n)


__all__ = [
    "AsrResult",
    "HeadSweep",
    "SafetyConfig",
    "SafetyReport",
    "analyze_safety",
    "asr",
    "asr_many",
    "final_representations",
    "kl_divergence",
    "last_token_logprobs",
    "generate_responses",
    "random_heads",
    "right_padding_is_exact",
    "sahara_search",
    "ships_scores",
    "subspace_angle",
    "sweep_heads",
    "top_head_overlap",
]
