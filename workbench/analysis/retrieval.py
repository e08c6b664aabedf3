"""Retrieval heads (and echo, induction, previous-token, duplicate-token heads).

* Retrieval score (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
  Factuality"): decode greedily; for each generated token w and each head, count a copy when
  the head's top-1 attended position lies in the needle's answer span and holds w; each copy
  adds 1/|span| (the span holds the answer's own tokens, not a separate leading-space token).
  A trial counts only when the response recalls the answer: ROUGE-1 recall > 0.5 on the decoded
  words, as the reference's ``rouge_score`` scorer (lowercase, tokens of [a-z0-9]+; it also stems
  words longer than 3 letters, which numbers and key words do not need), never on token ids; the score is the mean over counted trials; a head with score > 0.1 is a retrieval head.
  The argmax comes from the recorder (kernel pass A), so this runs at long context: the
  decoded tokens are appended and one recorded forward gives every decoding step's argmax
  (causal attention makes that identical to step-by-step decoding).
* Echo and induction scores (RazorAttention, Tang et al. 2024) on a random segment repeated
  several times: mean attention from position i to i - d*SEG (echo: the same token) and to
  i - d*SEG + 1 (induction: the token after it).
* Previous-token, duplicate-token and induction detectors as in TransformerLens's
  head_detector ("mul": mean over query rows of the attention mass on the detection pattern).
  Both families read single attention entries recomputed from captured q/k and the LSE, never
  the full pattern.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.analysis.scores import HeadScores
from workbench.analysis.sinks import BatchLimits
from workbench.data.needles import NeedleTrial
from workbench.errors import InputDataError
from workbench.interventions.kv_budget import STREAMING_RECENT, STREAMING_SINK, streaming_windows
from workbench.models.generate import last_logits_kwargs
from workbench.models.heads import Head, HeadLike
from workbench.models.model import Model
from workbench.record import AttentionRecord, AttentionRecorder, RecorderConfig
from workbench.record.decode import generate

if TYPE_CHECKING:  # imported where used, like ablate_heads itself
    from workbench.interventions.ablation import AblationMode


#: RazorAttention's induction score (mean attention on the token after the same token whole segments back)
RAZOR_INDUCTION = "razor_induction_score"
#: TransformerLens head_detector's induction score (attention mass on every earlier copy's successor, over all rows)
TL_INDUCTION = "tl_induction_score"


@dataclass(frozen=True)
class RetrievalConfig:
    """Defaults from Wu et al. 2024 (threshold 0.1, ROUGE-1 recall gate 0.5), RazorAttention
    (echo 1% / induction 14% of heads, 4 repeats of a random segment) and TransformerLens's
    head_detector ("mul" score, no exclusions)."""

    threshold: float = 0.1
    success_gate: float = 0.5
    # None: what the trial asks for (text needles: 50 tokens stopped at a newline, as Wu et al.;
    # the organisms' needles: as many tokens as the expected answer)
    max_new_tokens: int | None = None
    echo_ratio: float = 0.01
    induction_ratio: float = 0.14
    segment: int = 256  # RazorAttention uses 2500 tokens; scaled to small models
    repeats: int = 4
    seed: int = 2025


@dataclass
class TrialResult:
    index: int
    generated: list[int]
    recall: float  # ROUGE-1 recall of the answer in the response
    exact: bool
    hits: list[tuple[int, int, int]]  # (layer, head, position) of each counted copy


@dataclass
class RetrievalReport:
    scores: HeadScores  # retrieval_score, copy_rate
    trials: list[TrialResult]
    accuracy: float  # exact-match needle accuracy over all trials
    n_counted: int  # trials that passed the success gate
    config: RetrievalConfig = field(default_factory=RetrievalConfig)

    def retrieval_heads(self) -> list[Head]:
        return [h for h, v in self.scores.ranked("retrieval_score") if v > self.config.threshold]


_ROUGE_TOKEN = re.compile(r"[a-z0-9]+")


def rouge_words(text: str) -> list[str]:
    """The words ``rouge_score``'s default tokenizer sees: lowercase runs of [a-z0-9]."""
    return _ROUGE_TOKEN.findall(text.lower())


def rouge1_recall(reference: str, response: str) -> float:
    """ROUGE-1 recall of the reference's words in the response (0 when the reference has no words)."""
    ref, got = Counter(rouge_words(reference)), Counter(rouge_words(response))
    if not ref:
        return 0.0
    return sum(min(count, got[tok]) for tok, count in ref.items()) / sum(ref.values())


def answer_recall(tokenizer: Any, answer: Sequence[int], generated: Sequence[int]) -> float:
    """Wu et al.'s success gate: ROUGE-1 recall of the decoded answer in the decoded generation."""
    return rouge1_recall(
        tokenizer.decode([int(i) for i in answer], skip_special_tokens=True),
        tokenizer.decode([int(i) for i in generated], skip_special_tokens=True),
    )


def retrieval_scores(
    model: Model,
    trials: Sequence[NeedleTrial],
    cfg: RetrievalConfig = RetrievalConfig(),
    recorder: RecorderConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RetrievalReport:
    if not trials:
        raise InputDataError("no needle trials given", "generate trials with workbench.data.needles")
    geo = model.geometry
    rec_cfg = RecorderConfig(**{**(recorder or RecorderConfig()).__dict__, "columns": False, "layers": None})
    per_trial: list[np.ndarray] = []
    results: list[TrialResult] = []
    copies = np.zeros((geo.n_layers, geo.n_heads))
    weighted: list[np.ndarray] = []
    for t, trial in enumerate(trials):
        prompt = trial.prompt.view(1, -1).to(model.device)
        n_new = cfg.max_new_tokens or trial.meta.get("max_new_tokens") or len(trial.answer)
        stops = [int(i) for i in trial.meta.get("stop_ids", ())]
        # KV-cached decoding on the recorder's O(N)-memory attention, recording the decoded rows as the
        # reference does (flash prefill, then attention rows of the generated tokens only): the token at
        # step k is predicted by the prefill's last query (k = 0) or by decode step k - 1
        decoded = generate(model, prompt, n_new, stop_ids=stops, record=rec_cfg)
        assert decoded.prefill is not None
        row_argmax = [decoded.prefill.stack("argmax")[:, 0, :, -1]] + [r.stack("argmax")[:, 0, :, 0] for r in decoded.steps]
        row_pmax = [decoded.prefill.stack("pmax")[:, 0, :, -1]] + [r.stack("pmax")[:, 0, :, 0] for r in decoded.steps]
        decoded.prefill = None  # its per-query statistics of the whole prompt are not needed any more
        generated = decoded.tokens[0].cpu()
        cut = next((i for i, tok in enumerate(generated.tolist()) if tok in stops), None)
        if cut is not None:
            generated = generated[:cut]  # the reference stops at the newline and scores what came before
        if generated.numel() == 0:
            generated = torch.tensor([stops[0]]) if stops else generated
        answer = trial.answer.tolist()
        recall = answer_recall(model.tokenizer, answer, generated.tolist())
        full = torch.cat([prompt[0].cpu(), generated[:-1]]).view(1, -1)
        start, end = trial.answer_span
        span = end - start
        score = np.zeros((geo.n_layers, geo.n_heads))
        sharp = np.zeros((geo.n_layers, geo.n_heads))
        hits: list[tuple[int, int, int]] = []
        for k, token in enumerate(generated.tolist()):
            top = row_argmax[k]  # [L, H]: the key each head attends most when predicting token k
            inside = (top >= start) & (top < end)
            same = full[0][top.clamp(max=full.shape[1] - 1)] == token
            for layer, head in zip(*np.nonzero((inside & same).numpy())):
                score[layer, head] += 1.0 / span
                sharp[layer, head] += float(row_pmax[k][layer, head]) / span
                hits.append((int(layer), int(head), int(top[layer, head])))
        copies += score
        counted = recall > cfg.success_gate
        if counted:
            per_trial.append(score)
            weighted.append(sharp)
        results.append(TrialResult(t, generated.tolist(), recall, generated.tolist()[: len(answer)] == answer, hits))
        if progress:
            progress(t + 1, len(trials))
    scores = HeadScores("retrieval", geo.n_layers, geo.n_heads)
    mean = np.mean(per_trial, 0) if per_trial else np.full((geo.n_layers, geo.n_heads), np.nan)
    scores.add("retrieval_score", mean, f"Wu et al. retrieval score over {len(per_trial)} recalled trials")
    scores.add("copy_rate", copies / len(trials), "copies of needle tokens per trial, all trials")
    scores.add(
        "copy_attention",
        np.mean(weighted, 0) if weighted else np.full((geo.n_layers, geo.n_heads), np.nan),
        "retrieval score with each copy weighted by its attention probability (breaks ties at 1.0)",
    )
    accuracy = float(np.mean([r.exact for r in results]))
    return RetrievalReport(scores, results, accuracy, len(per_trial), cfg)


# -- echo / induction (RazorAttention) and TransformerLens-style detectors ---------------------------


def repeated_random_tokens(vocab_ids: Sequence[int], segment: int, repeats: int, bos: int | None, seed: int) -> torch.Tensor:
    """[BOS] + r * repeats with r a random segment (RazorAttention's probe), as [1, N]."""
    rng = random.Random(seed)
    pool = list(vocab_ids)
    seg = [pool[rng.randrange(len(pool))] for _ in range(segment)]
    ids = ([bos] if bos is not None else []) + seg * repeats
    return torch.tensor(ids).view(1, -1)


def _mean_pair_attention(record: AttentionRecord, layer: int, qi: torch.Tensor, kj: torch.Tensor, rows: int) -> np.ndarray:
    """Sum of A[qi, kj] over the pairs, divided by ``rows``: [H] for batch item 0."""
    if len(qi) == 0:
        return np.zeros(record.layer(layer).lse.shape[1])
    return (record.attention_at(layer, qi, kj)[0].double().sum(-1) / rows).numpy()


def echo_induction_scores(model: Model, tokens: torch.Tensor, segment: int, offset: int = 1) -> HeadScores:
    """Echo and induction scores per query head on a repeated-segment probe.

    ``offset`` is where the first segment starts (1 after a BOS). For query i in segment k >= 1
    and d = 1..k: echo averages A[i, i - d*SEG], induction averages A[i, i - d*SEG + 1].
    """
    geo = model.geometry
    n = tokens.shape[-1]
    q_list, k_list = [], []
    for i in range(offset + segment, n):
        k_seg = (i - offset) // segment
        for d in range(1, k_seg + 1):
            q_list.append(i)
            k_list.append(i - d * segment)
    qi, kj = torch.tensor(q_list), torch.tensor(k_list)
    with AttentionRecorder(model, columns=False, capture_qk=True) as rec, torch.no_grad():
        model.logits(tokens.to(model.device))
    record = rec.last
    echo = np.stack([_mean_pair_attention(record, l, qi, kj, len(qi)) for l in range(geo.n_layers)])
    ind = np.stack([_mean_pair_attention(record, l, qi, kj + 1, len(qi)) for l in range(geo.n_layers)])
    scores = HeadScores("retrieval", geo.n_layers, geo.n_heads)
    scores.add("echo_score", echo, "mean attention to the same token one segment back (RazorAttention)")
    scores.add(RAZOR_INDUCTION, ind, "mean attention to the token after the same token one segment back (RazorAttention)")
    return scores


def razor_selection(
    scores: HeadScores, n_kv_heads: int, cfg: RetrievalConfig = RetrievalConfig()
) -> dict[str, list[tuple[int, int]]]:
    """RazorAttention's global selection over (layer, KV head): a KV head scores the max of its
    query heads; keep the top ``induction_ratio`` by induction and ``echo_ratio`` by echo."""
    group = scores.n_heads // n_kv_heads

    def per_kv(metric: str) -> list[tuple[float, tuple[int, int]]]:
        v = scores[metric].reshape(scores.n_layers, n_kv_heads, group).max(-1)
        return sorted(((float(v[l, k]), (l, k)) for l in range(scores.n_layers) for k in range(n_kv_heads)), reverse=True)

    total = scores.n_layers * n_kv_heads
    n_ind = max(1, round(total * cfg.induction_ratio))
    n_echo = max(1, round(total * cfg.echo_ratio))
    induction = [kv for _, kv in per_kv(RAZOR_INDUCTION)[:n_ind]]
    echo = [kv for _, kv in per_kv("echo_score")[:n_echo]]
    return {"induction": induction, "echo": echo, "retrieval": sorted(set(induction) | set(echo))}


def detection_pairs(tokens: Sequence[int], kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, key) pairs where TransformerLens's detection pattern is 1."""
    toks = list(tokens)
    q, k = [], []
    if kind == "previous_token":
        for i in range(1, len(toks)):
            q.append(i)
            k.append(i - 1)
    elif kind in ("duplicate_token", "induction"):
        seen: dict[int, list[int]] = {}
        for i, tok in enumerate(toks):
            for j in seen.get(tok, []):
                if kind == "duplicate_token":
                    q.append(i)
                    k.append(j)
                elif j + 1 <= i:  # the token after an earlier occurrence (roll by one, tril)
                    q.append(i)
                    k.append(j + 1)
            seen.setdefault(tok, []).append(i)
    else:
        raise ValueError(f"unknown detector {kind!r}; use previous_token, duplicate_token or induction")
    return torch.tensor(q, dtype=torch.long), torch.tensor(k, dtype=torch.long)


DETECTORS = ("previous_token", "duplicate_token", "induction")
#: the metric each TransformerLens detector writes (its induction score is not RazorAttention's)
DETECTOR_METRICS = {
    "previous_token": "previous_token_score",
    "duplicate_token": "duplicate_token_score",
    "induction": TL_INDUCTION,
}


def detector_scores(model: Model, tokens: torch.Tensor, kinds: Sequence[str] = DETECTORS) -> HeadScores:
    """TransformerLens head_detector scores ("mul", no exclusions) from one recorded forward:
    the attention mass on the pattern's 1-entries, summed and divided by the number of rows."""
    geo = model.geometry
    tokens = tokens.view(1, -1)
    with AttentionRecorder(model, columns=False, capture_qk=True) as rec, torch.no_grad():
        model.logits(tokens.to(model.device))
    record = rec.last
    n = tokens.shape[-1]
    scores = HeadScores("retrieval", geo.n_layers, geo.n_heads)
    for kind in kinds:
        qi, kj = detection_pairs(tokens[0].tolist(), kind)
        values = np.stack([_mean_pair_attention(record, l, qi, kj, n) for l in range(geo.n_layers)])
        scores.add(DETECTOR_METRICS[kind], values, f"TransformerLens head_detector '{kind}' score (mul)")
    return scores


# -- causal checks ------------------------------------------------------------------------------


@torch.no_grad()
def needle_outcomes(model: Model, trials: Sequence[NeedleTrial]) -> list[bool]:
    """Per trial: the greedy answer is exactly the expected one (hooks and kernel edits active in the
    caller's context apply).

    Teacher-forced in one pass per trial: greedy decoding reproduces the answer exactly when every answer
    token is the argmax given the prompt and the answer before it (by induction over the steps), so one
    forward over prompt + answer[:-1] decides it, on the instrumented O(N)-memory attention, computing
    logits for the answer positions only (tests/analysis/test_retrieval_decoding.py checks it against
    greedy generation).
    """
    out = []
    with AttentionRecorder(model, layers=(), columns=False):
        for trial in trials:
            n = trial.answer.numel()
            seq = torch.cat([trial.prompt, trial.answer[:-1]]).view(1, -1).to(model.device)
            logits = model.bridge(seq, **last_logits_kwargs(model, n))
            pred = logits[0, -n:].argmax(-1).cpu()
            out.append(torch.equal(pred, trial.answer.cpu()))
    return out


def needle_accuracy(model: Model, trials: Sequence[NeedleTrial]) -> float:
    """Exact-match accuracy of greedy answers (hooks active in the caller's context apply)."""
    return _accuracy(needle_outcomes(model, trials))


def _accuracy(outcomes: Sequence[bool]) -> float:
    return sum(outcomes) / max(len(outcomes), 1)


# -- batched causal checks: one condition per batch row -------------------------------------------


@dataclass(frozen=True)
class NeedleCondition:
    """What one batch row of a needle check runs under: query heads ablated (in the sweep's mode) and
    query heads streaming with (sink, recent) windows (a KV budget). Hashable: equal conditions run once.
    ``NeedleCondition()`` is the unedited model."""

    ablated: frozenset[Head] = frozenset()
    streamed: frozenset[tuple[Head, int, int]] = frozenset()  # (head, sink, recent)

    @property
    def windows(self) -> dict[Head, tuple[int, int]]:
        return {h: (sink, recent) for h, sink, recent in self.streamed}


def ablation_condition(model: Model, heads: str | Iterable[HeadLike]) -> NeedleCondition:
    """The condition that ablates ``heads`` (checked against the model)."""
    from workbench.interventions.ablation import resolve_heads

    return NeedleCondition(ablated=frozenset(resolve_heads(model, heads)))


def budget_condition(
    model: Model, full_kv_heads: Iterable[tuple[int, int]], sink: int = STREAMING_SINK, recent: int = STREAMING_RECENT
) -> NeedleCondition:
    """`kv_budget_by_kv_heads` as a condition: these KV heads keep the full cache, every query head of
    another KV head streams with (sink, recent)."""
    windows = streaming_windows(model.geometry, full_kv_heads, sink, recent)
    return NeedleCondition(streamed=frozenset((h, s, r) for h, (s, r) in windows.items()))


def _as_condition(model: Model, condition: NeedleCondition | str | Iterable[HeadLike]) -> NeedleCondition:
    return condition if isinstance(condition, NeedleCondition) else ablation_condition(model, condition)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@torch.no_grad()
def needle_outcomes_many(
    model: Model,
    trials: Sequence[NeedleTrial],
    conditions: Sequence[NeedleCondition | str | Iterable[HeadLike]],
    mode: AblationMode = "uniform",
    limits: BatchLimits = BatchLimits(),
    progress: Callable[[int, int], None] | None = None,
    **ablation_kwargs: Any,
) -> list[list[bool]]:
    """`needle_outcomes` under each condition: ``out[c][t]`` is trial ``t``'s exact match under
    ``conditions[c]`` (a `NeedleCondition`, or heads to ablate in ``mode``).

    Per trial, the teacher-forced sequence is repeated over batch rows, row ``r`` under its own condition
    (`ablate_rows` for the ablated heads, per-row streaming kernel edits for the KV budget), at most
    ``limits.rows_for(n)`` rows per pass; equal conditions run once. So a trial costs
    ceil(U / R) passes for U distinct conditions instead of U. ``ablation_kwargs`` go to `ablate_rows`
    (``means=`` for mean ablation)."""
    from workbench.interventions.ablation import ablate_rows
    from workbench.interventions.kernel_edits import kernel_edits
    from workbench.interventions.kv_budget import row_streaming_edits

    conds = [_as_condition(model, c) for c in conditions]
    unique = list(dict.fromkeys(conds))
    found: dict[NeedleCondition, list[bool]] = {c: [] for c in unique}
    with AttentionRecorder(model, layers=(), columns=False):
        for t, trial in enumerate(trials):
            n = trial.answer.numel()
            seq = torch.cat([trial.prompt, trial.answer[:-1]]).view(1, -1).to(model.device)
            answer = trial.answer.cpu()
            for chunk in _chunks(unique, limits.rows_for(seq.shape[1])):
                rows = [sorted(c.ablated) for c in chunk]
                edits = row_streaming_edits([c.windows for c in chunk])
                with ablate_rows(model, rows, mode, **ablation_kwargs), kernel_edits(model, edits):
                    logits = model.bridge(seq.expand(len(chunk), -1), **last_logits_kwargs(model, n))
                pred = logits[:, -n:].argmax(-1).cpu()
                for c, row in zip(chunk, pred):
                    found[c].append(torch.equal(row, answer))
            if progress:
                progress(t + 1, len(trials))
    return [list(found[c]) for c in conds]


@dataclass
class AblationComparison:
    k: int
    base_accuracy: float
    top_heads: list[Head]
    top_accuracy: float
    random_heads: list[list[Head]]
    random_accuracies: list[float]
    mode: str

    @property
    def random_mean(self) -> float:
        return float(np.mean(self.random_accuracies))


def comparison_sets(
    model: Model, ranking: Sequence[Head], k: int, n_random: int = 3, seed: int = 0
) -> tuple[list[Head], list[list[Head]]]:
    """(top-k heads, ``n_random`` draws of k random heads not in the top k) of `top_vs_random_ablation`."""
    top = list(ranking[:k])
    rng = random.Random(seed)
    others = [h for h in model.geometry.all_heads() if h not in set(top)]
    return top, [rng.sample(others, k) for _ in range(n_random)]


def comparison_conditions(model: Model, top: Sequence[Head], random_sets: Sequence[Sequence[Head]]) -> list[NeedleCondition]:
    """The conditions of a comparison, in `comparison_result`'s order: base, top, each random set."""
    return [NeedleCondition(), ablation_condition(model, top), *(ablation_condition(model, s) for s in random_sets)]


def comparison_result(
    k: int, top: Sequence[Head], random_sets: Sequence[Sequence[Head]], outcomes: Sequence[Sequence[bool]], mode: str
) -> AblationComparison:
    """The comparison from the outcomes of `comparison_conditions` (same order)."""
    accs = [_accuracy(o) for o in outcomes]
    return AblationComparison(k, accs[0], list(top), accs[1], [list(s) for s in random_sets], accs[2:], mode)


def top_vs_random_ablation(
    model: Model,
    trials: Sequence[NeedleTrial],
    ranking: Sequence[Head],
    k: int,
    n_random: int = 3,
    mode: AblationMode = "uniform",
    seed: int = 0,
    limits: BatchLimits = BatchLimits(),
) -> AblationComparison:
    """Needle accuracy with the top-k ranked heads ablated vs k random heads (not in the top k), the
    conditions batched (`needle_outcomes_many`)."""
    top, random_sets = comparison_sets(model, ranking, k, n_random, seed)
    outcomes = needle_outcomes_many(model, trials, comparison_conditions(model, top, random_sets), mode, limits)
    return comparison_result(k, top, random_sets, outcomes, mode)


@dataclass
class BudgetCurve:
    """Needle accuracy against the KV cache kept: "retrieval-score head selection with a
    DuoAttention-style mask" (KV heads chosen by score, the others sink + recent), counted per KV head."""

    fractions: list[float]  # share of KV heads on the full cache
    cache_share: list[float]  # share of the full KV cache kept
    ranked_accuracy: list[float]
    random_accuracy: list[float]
    full_accuracy: float
    sink: int
    recent: int


@dataclass(frozen=True)
class BudgetDraws:
    """The KV-head sets of a budget curve: per fraction the ranked set and the random draws."""

    fractions: list[float]
    ranked: list[list[tuple[int, int]]]
    random: list[list[list[tuple[int, int]]]]
    cache_share: list[float]
    sink: int
    recent: int

    def conditions(self, model: Model) -> list[NeedleCondition]:
        """Base, each ranked set, then each fraction's random draws (`budget_result`'s order)."""
        sets = [*self.ranked, *(s for draws in self.random for s in draws)]
        return [NeedleCondition(), *(budget_condition(model, s, self.sink, self.recent) for s in sets)]


def budget_draws(
    model: Model,
    trials: Sequence[NeedleTrial],
    kv_ranking: Sequence[tuple[int, int]],
    fractions: Sequence[float],
    sink: int = STREAMING_SINK,
    recent: int = STREAMING_RECENT,
    seed: int = 0,
    n_random: int = 2,
) -> BudgetDraws:
    """The sets `kv_budget_curve` measures (the random draws in its order of the seed's stream)."""
    from workbench.interventions.kv_budget import cache_fraction

    geo = model.geometry
    all_kv = [(layer, kv) for layer in range(geo.n_layers) for kv in range(geo.n_kv_heads)]
    bad = [lk for lk in kv_ranking if tuple(lk) not in set(all_kv)]
    if bad or isinstance(next(iter(kv_ranking), None), Head):
        raise InputDataError(
            f"kv_ranking must list (layer, KV head) pairs of this model (KV heads 0..{geo.n_kv_heads - 1}), got {bad[:3] or 'query heads'}",
            "rank KV heads with workbench.interventions.kv_budget.kv_head_ranking or kv_ranking_from_heads",
        )
    total = len(all_kv)
    rng = random.Random(seed)
    n_tokens = int(np.mean([t.context_len for t in trials]))
    ranked, drawn, shares = [], [], []
    for frac in fractions:
        n_full = int(round(frac * total))
        ranked.append(list(kv_ranking[:n_full]))
        drawn.append([rng.sample(all_kv, n_full) for _ in range(n_random)])
        shares.append(cache_fraction(n_tokens, n_full, total, sink, recent))
    return BudgetDraws(list(fractions), ranked, drawn, shares, sink, recent)


def budget_result(draws: BudgetDraws, outcomes: Sequence[Sequence[bool]]) -> BudgetCurve:
    """The curve from the outcomes of ``draws.conditions(model)`` (same order)."""
    accs = [_accuracy(o) for o in outcomes]
    n = len(draws.fractions)
    rest = iter(accs[1 + n :])
    random_acc = [float(np.mean([next(rest) for _ in d])) for d in draws.random]
    return BudgetCurve(list(draws.fractions), draws.cache_share, accs[1 : 1 + n], random_acc, accs[0], draws.sink, draws.recent)


def kv_budget_curve(
    model: Model,
    trials: Sequence[NeedleTrial],
    kv_ranking: Sequence[tuple[int, int]],
    fractions: Sequence[float],
    sink: int = STREAMING_SINK,
    recent: int = STREAMING_RECENT,
    seed: int = 0,
    n_random: int = 2,
    limits: BatchLimits = BatchLimits(),
) -> BudgetCurve:
    """Needle accuracy when the top fraction of ranked *KV heads* keeps the full cache (with every
    query head they serve) and the other KV heads keep sink + recent only, against the same number
    of random KV heads. ``kv_ranking``: (layer, KV head) pairs, best first (`kv_head_ranking`).
    Every budget, ranked and random, is a batch row with its own streaming kernel edits
    (`needle_outcomes_many`)."""
    draws = budget_draws(model, trials, kv_ranking, fractions, sink, recent, seed, n_random)
    return budget_result(draws, needle_outcomes_many(model, trials, draws.conditions(model), limits=limits))


@torch.no_grad()
def answer_accuracy(model: Model, trials: Sequence[NeedleTrial]) -> float:
    """Teacher-forced accuracy: every answer token is the argmax given the prompt and the
    answer so far (one forward per trial; hooks active in the caller's context apply)."""
    correct = 0
    for trial in trials:
        seq = torch.cat([trial.prompt, trial.answer[:-1]]).view(1, -1).to(model.device)
        logits = model.logits(seq)[0]
        start = trial.prompt.numel() - 1
        pred = logits[start : start + trial.answer.numel()].argmax(-1).cpu()
        correct += int(torch.equal(pred, trial.answer))
    return correct / max(len(trials), 1)


@torch.no_grad()
def answer_logprob(model: Model, trials: Sequence[NeedleTrial]) -> float:
    """Mean teacher-forced log-probability of the answer tokens (a continuous needle metric)."""
    total, count = 0.0, 0
    for trial in trials:
        seq = torch.cat([trial.prompt, trial.answer[:-1]]).view(1, -1).to(model.device)
        logp = torch.log_softmax(model.logits(seq)[0].double(), -1)
        start = trial.prompt.numel() - 1
        rows = logp[start : start + trial.answer.numel()].cpu()
        total += float(rows.gather(1, trial.answer.view(-1, 1)).sum())
        count += trial.answer.numel()
    return total / max(count, 1)
