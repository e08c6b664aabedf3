"""Greedy decoding through the bridge, so every active hook (ablation, edit) applies.

Hugging Face's `generate` runs the wrapped model directly and would bypass the bridge's
hooks; this loop re-runs the bridge on the growing sequence instead. It is quadratic in
the number of generated tokens, which is fine for the short answers the analyses decode.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from workbench.errors import WorkbenchError
from workbench.models.model import Model


@torch.no_grad()
def greedy_generate(model: Model, tokens: torch.Tensor, max_new_tokens: int, stop_ids: Iterable[int] = ()) -> torch.Tensor:
    """Generated ids [B, <= max_new_tokens] (rows stop at a stop id, padded with the stop id).

    For long prompts, run it inside ``AttentionRecorder(model, layers=(), columns=False)``
    (workbench.record): the steps then use the recorder's O(N)-memory attention; hooks on queries
    (uniform ablation) still apply, pattern-level edits do not.
    """
    seq = tokens.view(tokens.shape[0] if tokens.dim() > 1 else 1, -1).to(model.device)
    # learned absolute positions end at n_ctx (past it the embedding lookup fails); RoPE models may be
    # run past their trained length on purpose, so they are not stopped here
    n_ctx = int(getattr(model.geometry, "n_ctx", 0) or 0) if model.geometry.positional.kind == "absolute" else 0
    if n_ctx and seq.shape[1] + max_new_tokens > n_ctx:
        raise WorkbenchError(
            f"{seq.shape[1]} prompt tokens + {max_new_tokens} new tokens exceed the context of {model.name} ({n_ctx} tokens)",
            "use shorter prompts (--max-tokens) or fewer new tokens",
        )
    stops = torch.tensor(sorted(set(stop_ids)), device=seq.device, dtype=seq.dtype)
    done = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    out: list[torch.Tensor] = []
    for _ in range(max_new_tokens):
        nxt = model.logits(seq)[:, -1].argmax(-1)
        if out and stops.numel():
            nxt = torch.where(done, out[-1], nxt)
        out.append(nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if stops.numel():
            done |= torch.isin(nxt, stops)
            if bool(done.all()):
                break
    if not out:
        return seq[:, :0]
    return torch.stack(out, dim=1)
