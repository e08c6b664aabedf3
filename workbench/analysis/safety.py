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

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workbench.analysis.refusal import RefusalJudge, ShipsPaperJudge, Verdict, attack_success_rate
from workbench.analysis.scores import HeadScores
from workbench.errors import InputDataError
from workbench.interventions.ablation import ablate_heads
from workbench.models.heads import Head
from workbench.models.hooks import temporary_hooks
from workbench.models.model import Model
from workbench.record.decode import generate


@dataclass(frozen=True)
class SafetyConfig:
    """Defaults from the Ships/Sahara code: epsilon 1e-5 on the query, rank 1, groups of up
    to 3 heads (the paper's best size); the KL adds 1e-12 inside the logs as the code does."""

    epsilon: float = 1e-5
    kl_eps: float = 1e-12
    rank: int = 1
    max_group: int = 3
    max_new_tokens: int = 8
    judge: RefusalJudge | ShipsPaperJudge = field(default_factory=RefusalJudge)


def _by_length(prompts: Sequence[torch.Tensor]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(int(p.numel()), []).append(i)
    return groups


def _check_prompts(prompts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    if not prompts:
        raise InputDataError("no prompts given for the safety analysis", "give at least one harmful prompt")
    return [p.view(-1) for p in prompts]


@torch.no_grad()
def last_token_logprobs(model: Model, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """[Q, V] log-probabilities of the next token after each prompt (batched by length)."""
    prompts = _check_prompts(prompts)
    out: list[torch.Tensor | None] = [None] * len(prompts)
    for _, idx in _by_length(prompts).items():
        batch = torch.stack([prompts[i] for i in idx]).to(model.device)
        logp = torch.log_softmax(model.logits(batch)[:, -1].double(), -1).cpu()
        for row, i in enumerate(idx):
            out[i] = logp[row]
    return torch.stack(out)  # type: ignore[arg-type]


def kl_divergence(logp_base: torch.Tensor, logp_other: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL(p || q) per row, with eps added inside the logs as the Ships code does."""
    p, q = logp_base.exp(), logp_other.exp()
    return ((p + eps) * ((p + eps).log() - (q + eps).log())).sum(-1)


def ships_scores(
    model: Model,
    prompts: Sequence[torch.Tensor],
    cfg: SafetyConfig = SafetyConfig(),
    heads: Sequence[Head] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """[Q, L, H] Ships of every (query, head); NaN for heads not asked for."""
    geo = model.geometry
    prompts = _check_prompts(prompts)
    base = last_token_logprobs(model, prompts)
    chosen = list(heads) if heads is not None else geo.all_heads()
    out = np.full((len(prompts), geo.n_layers, geo.n_heads), np.nan)
    for n, head in enumerate(chosen):
        with ablate_heads(model, [head], mode="uniform", epsilon=cfg.epsilon):
            ablated = last_token_logprobs(model, prompts)
        out[:, head.layer, head.head] = kl_divergence(base, ablated, cfg.kl_eps).numpy()
        if progress:
            progress(n + 1, len(chosen))
    return out


@torch.no_grad()
def final_representations(model: Model, prompts: Sequence[torch.Tensor]) -> torch.Tensor:
    """[Q, d_model] final-norm output (with its gain) at the last prompt token."""
    prompts = _check_prompts(prompts)
    out: list[torch.Tensor | None] = [None] * len(prompts)
    box: dict[str, torch.Tensor] = {}

    def grab(t: torch.Tensor, hook: Any) -> None:
        box["h"] = t.detach()[:, -1].double().cpu()

    for _, idx in _by_length(prompts).items():
        batch = torch.stack([prompts[i] for i in idx]).to(model.device)
        box.clear()
        with temporary_hooks([(model.bridge.ln_final.hook_out, grab)]):
            model.logits(batch)
        for row, i in enumerate(idx):
            out[i] = box["h"][row]
    return torch.stack(out)  # type: ignore[arg-type]


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
) -> SaharaResult:
    """Greedy head-group search maximising the subspace angle against the unablated base."""
    geo = model.geometry
    base = final_representations(model, prompts)
    group: list[Head] = []
    steps: list[np.ndarray] = []
    total = cfg.max_group * geo.n_total_heads
    done = 0
    for _ in range(cfg.max_group):
        scores = np.full((geo.n_layers, geo.n_heads), np.nan)
        for head in geo.all_heads():
            if head in group:
                continue
            with ablate_heads(model, [*group, head], mode="uniform", epsilon=cfg.epsilon):
                reps = final_representations(model, prompts)
            scores[head.layer, head.head] = subspace_angle(base, reps, cfg.rank)
            done += 1
            if progress:
                progress(done, total)
        best = np.unravel_index(np.nanargmax(scores), scores.shape)
        group.append(Head(int(best[0]), int(best[1])))
        steps.append(scores)
    return SaharaResult(group, steps)


# -- attack success rate --------------------------------------------------------------------------


@torch.no_grad()
def generate_responses(model: Model, prompts: Sequence[torch.Tensor], max_new_tokens: int) -> list[str]:
    prompts = _check_prompts(prompts)
    out: list[str] = [""] * len(prompts)
    for _, idx in _by_length(prompts).items():
        batch = torch.stack([prompts[i] for i in idx])
        gen = generate(model, batch, max_new_tokens).tokens  # KV-cached, on the instrumented core
        for row, i in enumerate(idx):
            out[i] = model.tokenizer.decode(gen[row].tolist(), skip_special_tokens=True)
    return out


@dataclass
class AsrResult:
    asr: float
    verdicts: list[Verdict]
    responses: list[str]
    heads: list[list[Head]]  # the heads ablated for each prompt


def asr(
    model: Model,
    prompts: Sequence[torch.Tensor],
    heads: Sequence[Head] | Sequence[Sequence[Head]] = (),
    cfg: SafetyConfig = SafetyConfig(),
    mode: str = "uniform",
    means: Any = None,
) -> AsrResult:
    """ASR with ``heads`` ablated (uniform attention, as in Ships; or ``mode`` "mean"/"zero" with
    ``means`` from `head_means`, to tell a head that carries the decision from one whose uniform
    ablation leaves it intact). ``heads`` is one group for all prompts, or one group per prompt
    (Ships's query-level evaluation ablates each query's own heads)."""
    prompts = _check_prompts(prompts)
    per_prompt = bool(heads) and isinstance(list(heads)[0], (list, tuple)) and not isinstance(list(heads)[0], Head)
    groups: list[list[Head]] = [list(g) for g in heads] if per_prompt else [list(heads)] * len(prompts)  # type: ignore[arg-type]
    if len(groups) != len(prompts):
        raise InputDataError(f"{len(groups)} head groups for {len(prompts)} prompts", "give one group per prompt")
    responses: list[str] = [""] * len(prompts)
    by_group: dict[tuple[Head, ...], list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(tuple(g), []).append(i)
    for group, idx in by_group.items():
        with ablate_heads(model, list(group), mode=mode, epsilon=cfg.epsilon, means=means):  # type: ignore[arg-type]
            texts = generate_responses(model, [prompts[i] for i in idx], cfg.max_new_tokens)
        for i, text in zip(idx, texts):
            responses[i] = text
    verdicts = [cfg.judge.judge(r) for r in responses]
    return AsrResult(attack_success_rate(verdicts), verdicts, responses, groups)


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
    ships = ships_scores(model, harmful, cfg, progress=progress)
    scores = HeadScores("safety", geo.n_layers, geo.n_heads)
    scores.add("ships_mean", np.nanmean(ships, 0), "dataset-level Ships: mean KL at the last prompt token")
    top = np.zeros((geo.n_layers, geo.n_heads))
    flat = ships.reshape(len(ships), -1)
    for i in np.nanargmax(flat, axis=1):
        top[i // geo.n_heads, i % geo.n_heads] += 1.0 / len(ships)
    scores.add("ships_top1_share", top, "share of queries whose top Ships head is this head")
    sahara = sahara_search(model, harmful, cfg) if run_sahara else None
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
    "SafetyConfig",
    "SafetyReport",
    "analyze_safety",
    "asr",
    "final_representations",
    "kl_divergence",
    "last_token_logprobs",
    "random_heads",
    "sahara_search",
    "ships_scores",
    "subspace_angle",
    "top_head_overlap",
]
