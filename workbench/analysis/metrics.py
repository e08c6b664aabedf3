"""Task metrics the causal checks compare before and after an intervention."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from workbench.models.model import Model


@torch.no_grad()
def lm_loss(model: Model, prompts: Sequence[torch.Tensor]) -> float:
    """Mean next-token cross-entropy (nats per token) over the prompts."""
    total, count = 0.0, 0
    for prompt in prompts:
        tokens = prompt.view(1, -1).to(model.device)
        logits = model.logits(tokens)[0, :-1].float()
        loss = F.cross_entropy(logits, tokens[0, 1:], reduction="sum")
        total += float(loss)
        count += tokens.shape[1] - 1
    return total / max(count, 1)
