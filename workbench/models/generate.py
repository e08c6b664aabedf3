"""Greedy decoding through the bridge, so every active hook (ablation, edit) applies.

Hugging Face's `generate` runs the wrapped model directly and would bypass the bridge's hooks, so
decoding is a loop over bridge calls. Two loops give the same tokens:

* **cached** (the default whenever the instrumented attention of `workbench.record` is installed): one
  prefill of the prompt fills a KV cache, then each step runs only the new token against it, so a
  step costs O(N) instead of a whole forward. Hooks fire on the new token's query and output in every
  step (uniform, zero and mean ablation), and kernel-side edits (streaming windows, removed keys, ACT)
  apply to the cached keys through the core. Only the last position's logits are computed.
* **uncached**: every step re-runs the whole sequence (quadratic). It is the reference the cached loop
  is tested against, and what runs on the bridge's own eager attention: TransformerLens 4.3's eager
  attention mis-handles a cached step on most architectures (logits off by 3-10 on the tiny Llama,
  Qwen2, Gemma and Phi-3 models), so the cached loop is used only under the instrumented core.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch

from workbench.errors import WorkbenchError
from workbench.models.model import Model

#: bridge attribute set by `workbench.record.patch.instrumented_attention` while it is installed
INSTRUMENTED_FLAG = "_workbench_instrumented"
#: bridge attribute holding the kernel-side head edits in force ({layer: (HeadEdit, ...)}), set by
#: `workbench.interventions.kernel_edits` and read by the instrumented core
EDITS_ATTR = "_workbench_kernel_edits"


def is_instrumented(model: Model) -> bool:
    """True inside `instrumented_attention` (a recorder, or a plain instrumented core)."""
    return bool(model.bridge.__dict__.get(INSTRUMENTED_FLAG, 0))


def new_cache() -> Any:
    """An empty KV cache whose layers keep every key (no sliding-window truncation: the instrumented core
    applies each layer's window itself, and recorded statistics index keys by absolute position)."""
    from transformers import DynamicCache

    return DynamicCache()


def last_logits_kwargs(model: Model, n: int = 1) -> dict[str, Any]:
    """``logits_to_keep=n`` when the wrapped model takes it: a long prefill then computes the last ``n``
    rows of logits instead of N x vocab floats (67 GB at 128k tokens and a 128k vocabulary). Callers
    slice ``[:, -n:]`` either way."""
    try:
        params = inspect.signature(model.hf_model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"logits_to_keep": int(n)} if "logits_to_keep" in params else {}


def _check_context(model: Model, n_prompt: int, max_new_tokens: int) -> None:
    # learned absolute positions end at n_ctx (past it the embedding lookup fails); RoPE models may be
    # run past their trained length on purpose, so they are not stopped here
    n_ctx = int(getattr(model.geometry, "n_ctx", 0) or 0) if model.geometry.positional.kind == "absolute" else 0
    if n_ctx and n_prompt + max_new_tokens > n_ctx:
        raise WorkbenchError(
            f"{n_prompt} prompt tokens + {max_new_tokens} new tokens exceed the context of {model.name} ({n_ctx} tokens)",
            "use shorter prompts (--max-tokens) or fewer new tokens",
        )


@torch.no_grad()
def greedy_generate(
    model: Model,
    tokens: torch.Tensor,
    max_new_tokens: int,
    stop_ids: Iterable[int] = (),
    cache: bool | None = None,
) -> torch.Tensor:
    """Generated ids [B, <= max_new_tokens] (rows stop at a stop id, padded with the stop id).

    ``cache``: decode against a KV cache (see the module docstring); ``None`` picks it whenever the
    instrumented attention is installed, e.g. inside ``AttentionRecorder(model, layers=(), columns=False)``
    or `workbench.record.decode.generate`. ``cache=True`` outside it is refused (the bridge's eager
    cached step is wrong on most architectures).
    """
    seq = tokens.view(tokens.shape[0] if tokens.dim() > 1 else 1, -1).to(model.device)
    _check_context(model, seq.shape[1], max_new_tokens)
    instrumented = is_instrumented(model)
    use_cache = instrumented if cache is None else bool(cache)
    if use_cache and not instrumented:
        raise WorkbenchError(
            "cached decoding needs the instrumented attention (the bridge's own eager attention mis-handles a cached step)",
            "decode inside workbench.record.decode.generate or an AttentionRecorder, or pass cache=False",
        )
    stops = torch.tensor(sorted(set(stop_ids)), device=seq.device, dtype=seq.dtype)
    done = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
    out: list[torch.Tensor] = []
    kv = new_cache() if use_cache else None
    keep = last_logits_kwargs(model) if use_cache else {}
    step_input = seq
    for _ in range(max_new_tokens):
        if kv is not None:
            nxt = model.bridge(step_input, past_key_values=kv, **keep)[:, -1].argmax(-1)
        else:
            nxt = model.logits(seq)[:, -1].argmax(-1)
        if out and stops.numel():
            nxt = torch.where(done, out[-1], nxt)
        out.append(nxt)
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        step_input = nxt[:, None]
        if stops.numel():
            done |= torch.isin(nxt, stops)
            if bool(done.all()):
                break
    if not out:
        return seq[:, :0]
    return torch.stack(out, dim=1)
