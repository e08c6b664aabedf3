"""Task metrics the causal checks compare before and after an intervention.

Every metric here is a mean teacher-forced log-probability (the LM loss is its negative over every next
token, the needle metric over the answer tokens), computed without full logits: one forward yields the
final hidden states (the model computes logits for its last position only, `last_logits_kwargs`), and
the unembedding plus log-softmax then run over chunks of the scored positions, so at most
`LOGIT_CHUNK_ELEMENTS` float64 logits exist at once (full float32 logits are 67 GB at 128k tokens and a
128k vocabulary). The model's own logit post-processing (soft-capping, logit scales) is applied and
checked against the last row the model returned; a model where they disagree falls back to its full
logits, scored chunk by chunk.

A batch of rows of the *same* sequence (one row per edited head, `workbench.kernels.HeadEdit.rows`)
is scored in one forward: `row_logprob_sums`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from workbench.models.generate import is_instrumented, last_logits_kwargs
from workbench.models.model import Model

#: float64 logits held at once by the chunked scoring (16M = 128 MiB)
LOGIT_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class Targets:
    """One teacher-forced sequence: the ids fed to the model and the predictions scored (the logits at
    ``positions`` should put ``targets`` first)."""

    tokens: torch.Tensor  # [N] ids
    positions: torch.Tensor  # [M] int64 positions in 0..N-1
    targets: torch.Tensor  # [M] int64 ids

    @classmethod
    def next_tokens(cls, prompt: torch.Tensor) -> Targets:
        """Every next-token prediction of the prompt (what the LM loss scores)."""
        ids = prompt.reshape(-1).cpu()
        return cls(ids, torch.arange(ids.numel() - 1), ids[1:].clone())

    @property
    def count(self) -> int:
        return int(self.targets.numel())


def _finish_logits(config: Any, logits: torch.Tensor) -> torch.Tensor:
    """What Hugging Face's causal-LM heads apply after the unembedding (Cohere's logit scale, Granite's
    logit divisor, Gemma 2/3 final soft-capping)."""
    scale = getattr(config, "logit_scale", None)
    if isinstance(scale, (int, float)) and not isinstance(scale, bool):
        logits = logits * scale
    divisor = getattr(config, "logits_scaling", None)
    if isinstance(divisor, (int, float)) and not isinstance(divisor, bool) and divisor:
        logits = logits / divisor
    cap = getattr(config, "final_logit_softcapping", None)
    if isinstance(cap, (int, float)) and not isinstance(cap, bool) and cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _forward_hidden(model: Model, tokens: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(final hidden states [R, N, d] or None, logits the model returned): the hidden states come from
    the base model's output, the logits for the last position only when the model can (else all)."""
    hf = model.hf_model
    base = getattr(hf, "base_model", None)
    keep = last_logits_kwargs(model)
    if base is None or base is hf or not keep:
        return None, model.bridge(tokens)
    box: dict[str, torch.Tensor] = {}

    def grab(module: Any, args: Any, out: Any) -> None:
        hidden = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", None)
        if isinstance(hidden, torch.Tensor):
            box["h"] = hidden

    handle = base.register_forward_hook(grab)
    try:
        logits = model.bridge(tokens, **keep)
    finally:
        handle.remove()
    hidden = box.get("h")
    if hidden is None or hidden.shape[:2] != tokens.shape[:2]:
        return None, model.bridge(tokens)
    return hidden, logits


#: longer sequences are scored under the instrumented core (chunked attention), never the bridge's eager
#: N x N attention: 32 heads x 16k^2 float32 scores are 32 GiB for one layer of an 8B model
EAGER_LOSS_MAX_TOKENS = 2048


def _long_context_attention(model: Model, n_tokens: int) -> contextlib.AbstractContextManager[Any]:
    """The chunked instrumented attention (recording nothing) for a long sequence, unless the caller
    already runs under a recorder; short sequences keep the bridge's own attention."""
    if n_tokens <= EAGER_LOSS_MAX_TOKENS or is_instrumented(model):
        return contextlib.nullcontext()
    from workbench.record import AttentionRecorder

    return AttentionRecorder(model, columns=False, layers=())


def _head_logits(model: Model, hidden: torch.Tensor) -> torch.Tensor:
    return _finish_logits(model.hf_model.config, model.hf_model.get_output_embeddings()(hidden))


@torch.no_grad()
def row_logprob_sums(model: Model, tokens: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """float64 [R]: per batch row of ``tokens`` [R, N], the summed log-probability of ``targets`` [M] at
    ``positions`` [M] (the same scored positions in every row), in one forward and chunked logits."""
    tokens = tokens.to(model.device)
    rows = tokens.shape[0]
    pos = positions.to(model.device, torch.long)
    tgt = targets.to(model.device, torch.long)
    with _long_context_attention(model, tokens.shape[-1]):
        hidden, logits = _forward_hidden(model, tokens)
        if hidden is not None:
            check = _head_logits(model, hidden[:, -1:]).float()
            if not torch.allclose(check, logits[:, -1:].float(), rtol=1e-3, atol=1e-3):
                hidden, logits = None, model.bridge(tokens)  # post-processing this module does not know
    vocab = int(logits.shape[-1])
    step = max(1, LOGIT_CHUNK_ELEMENTS // max(1, rows * vocab))
    total = torch.zeros(rows, dtype=torch.float64, device=model.device)
    for i in range(0, pos.numel(), step):
        p, t = pos[i : i + step], tgt[i : i + step]
        chunk = (_head_logits(model, hidden[:, p]) if hidden is not None else logits[:, p]).double()  # [R, c, V]
        picked = chunk.gather(-1, t.view(1, -1, 1).expand(rows, -1, 1))[..., 0]
        total += (picked - torch.logsumexp(chunk, -1)).sum(-1)
    return total.cpu()


def logprob_sums(model: Model, items: Sequence[Targets]) -> list[tuple[float, int]]:
    """Per item: (summed target log-probability, number of targets), one forward each."""
    out = []
    for item in items:
        if item.count == 0:
            out.append((0.0, 0))
            continue
        s = row_logprob_sums(model, item.tokens.view(1, -1), item.positions, item.targets)
        out.append((float(s[0]), item.count))
    return out


def mean_logprob(model: Model, items: Sequence[Targets]) -> float:
    """Mean teacher-forced log-probability over all the targets of the items."""
    sums = logprob_sums(model, items)
    return sum(s for s, _ in sums) / max(sum(c for _, c in sums), 1)


@torch.no_grad()
def lm_loss(model: Model, prompts: Sequence[torch.Tensor]) -> float:
    """Mean next-token cross-entropy (nats per token) over the prompts, with chunked logits (equal to
    the cross-entropy of the full float32 logits within 1e-5 relative: here it is summed in float64)."""
    return -mean_logprob(model, [Targets.next_tokens(p) for p in prompts])
