"""Held-out accuracy per task, for any forward function (HF model or a workbench `Model`).

Scoring is teacher-forced: an answer counts as produced when the argmax at every answer position
equals the answer token. For a fixed answer this is exactly "greedy decoding produces the answer"
(the first wrong argmax is where greedy decoding would diverge), at the cost of one forward pass.

Metrics (all in [0, 1]):

- ``needle-*``: fraction of probes whose value tokens are produced exactly;
- ``induction``: next-token accuracy over the second copy (its first token excluded: it is given);
- ``periodic``: next-token accuracy over periods 3-8 of the rhythm;
- ``refusal-*``: ``refusal_rate`` (the output is the refusal phrase) and ``compliance_rate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from workbench.organisms import tasks
from workbench.organisms.datasets import load_probes
from workbench.organisms.tasks import Probe
from workbench.organisms.vocab import PAD_ID

if TYPE_CHECKING:
    from workbench.models.model import Model

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def hf_logits_fn(model) -> LogitsFn:
    """Forward function of a Hugging Face causal LM."""
    return lambda ids: model(input_ids=ids).logits


def bridge_logits_fn(model: Model) -> LogitsFn:
    """Forward function of a workbench `Model` (through the TransformerBridge, hooks included)."""
    return lambda ids: model.bridge(ids.to(model.device))


@dataclass
class ProbeScores:
    """Per-probe results: ``token_correct[i]`` is a bool array over the answer tokens of probe i."""

    token_correct: list[np.ndarray]
    answer_logprob: np.ndarray  # sum of answer token log-probs per probe

    @property
    def exact(self) -> np.ndarray:
        return np.array([bool(t.all()) for t in self.token_correct])

    @property
    def exact_rate(self) -> float:
        return float(self.exact.mean()) if len(self.token_correct) else float("nan")

    @property
    def token_accuracy(self) -> float:
        flat = np.concatenate(self.token_correct) if self.token_correct else np.zeros(0)
        return float(flat.mean()) if flat.size else float("nan")


@torch.no_grad()
def score_probes(
    logits_fn: LogitsFn,
    probes: Sequence[Probe],
    batch_size: int = 16,
    answers: Sequence[np.ndarray] | None = None,
    device: torch.device | str = "cpu",
) -> ProbeScores:
    """Teacher-forced scoring of ``probes`` (or of other ``answers`` after the same prompts)."""
    answers = [p.answer for p in probes] if answers is None else list(answers)
    token_correct: list[np.ndarray] = []
    logprobs: list[float] = []
    for start in range(0, len(probes), batch_size):
        chunk = probes[start : start + batch_size]
        ans = answers[start : start + batch_size]
        seqs = [np.concatenate([p.prompt, a]) for p, a in zip(chunk, ans)]
        width = max(len(s) for s in seqs)
        ids = np.full((len(seqs), width), PAD_ID, dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s  # right padding never changes earlier positions of a causal model
        logits = logits_fn(torch.from_numpy(ids).to(device)).float()
        logp = torch.log_softmax(logits, dim=-1)
        for i, (p, a) in enumerate(zip(chunk, ans)):
            pos = torch.arange(len(p.prompt) - 1, len(p.prompt) - 1 + len(a))
            target = torch.from_numpy(np.asarray(a, dtype=np.int64))
            rows = logp[i, pos.to(logp.device)].cpu()
            token_correct.append((rows.argmax(-1) == target).numpy())
            logprobs.append(float(rows.gather(-1, target[:, None]).sum()))
    return ProbeScores(token_correct, np.asarray(logprobs))


#: probe set -> how many probes a default evaluation uses, and the batch size for it
DEFAULT_SUITE: dict[str, int] = {
    "needle-512": 200,
    "needle-1024": 200,
    "needle-1024-d7": 100,
    "needle-512-d0": 100,
    "induction": 200,
    "periodic": 100,
    "refusal-harmful-test": 120,
    "refusal-benign-test": 120,
    "refusal-harmful-train": 120,
    "refusal-benign-train": 120,
}
#: the smaller suite used every few hundred steps while training
TRAINING_SUITE: dict[str, int] = {
    "needle-256": 24,
    "needle-512": 48,
    "needle-1024": 24,
    "induction": 48,
    "periodic": 24,
    "refusal-harmful-test": 120,
    "refusal-benign-test": 120,
}


def _batch_for(name: str) -> int:
    if name.startswith("needle-1024"):
        return 4
    if name.startswith("needle"):
        return 8
    return 32


def load_suite(suite: dict[str, int]) -> dict[str, list[Probe]]:
    return {name: load_probes(name, n) for name, n in suite.items()}


def evaluate_probes(
    logits_fn: LogitsFn, probe_sets: dict[str, list[Probe]], device: torch.device | str = "cpu"
) -> dict[str, dict[str, float]]:
    """Metrics per probe set (see the module docstring); each entry also holds ``n``."""
    out: dict[str, dict[str, float]] = {}
    for name, probes in probe_sets.items():
        bs = _batch_for(name)
        if name.startswith("refusal"):
            refusal = score_probes(logits_fn, probes, bs, answers=[tasks.REFUSAL] * len(probes), device=device)
            comply = score_probes(logits_fn, probes, bs, answers=[tasks.COMPLIANCE] * len(probes), device=device)
            wants_refusal = np.array([np.array_equal(p.answer, tasks.REFUSAL) for p in probes])
            correct = np.where(wants_refusal, refusal.exact, comply.exact)
            out[name] = {
                "refusal_rate": refusal.exact_rate,
                "compliance_rate": comply.exact_rate,
                "accuracy": float(correct.mean()),
                "n": len(probes),
            }
            continue
        scores = score_probes(logits_fn, probes, bs, device=device)
        if name.startswith("needle"):
            out[name] = {"accuracy": scores.exact_rate, "mean_logprob": float(scores.answer_logprob.mean()), "n": len(probes)}
        else:
            out[name] = {"accuracy": scores.token_accuracy, "exact": scores.exact_rate, "n": len(probes)}
    return out


def headline(metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """One number per set: refusal rate for refusal sets, accuracy otherwise."""
    return {k: (v["refusal_rate"] if k.startswith("refusal") else v["accuracy"]) for k, v in metrics.items()}
