"""Swap a bridge's attention core for the instrumented one, and swap it back.

TransformerLens 4 re-implements attention eagerly and builds the N x N scores in float32.
We keep everything the bridge does up to the rotated queries and keys (projections, q/k norms,
RoPE and their hooks) and replace only the score/softmax/PV block with a callable that returns
the attention output and records statistics. Two bridge kinds are handled:

* rotary bridges (Llama, Qwen2, Mistral-like): the bridge's own forward runs until
  ``hook_rot_k`` fires; a hook there captures Q/K (and V from ``hook_v``) and stops the
  forward, then the output projection runs as in the bridge.
* joint-QKV bridges (GPT-2): ``_reconstruct_attention`` is replaced on the instance.

Features the instrumented core does not implement (soft-capping, sliding windows, learned
sinks, gated outputs, KV caches, per-head results) raise a clear error instead of giving
silently different logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from workbench.errors import UnsupportedModelError
from workbench.models.hooks import temporary_hooks

# core(layer, q [B,H,N,D], k [B,Hkv,N,D], v [B,Hkv,N,D], scale) -> out [B,H,N,D]
Core = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]

ATTN_IMPL_NAME = "workbench_recorder"


class _StopAfterRotary(Exception):
    """Raised from hook_rot_k to leave the bridge's forward before it builds N x N scores."""


def bridge_kind(attn: Any) -> str:
    from transformer_lens.model_bridge.generalized_components.joint_qkv_attention import JointQKVAttentionBridge
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    if isinstance(attn, PositionEmbeddingsAttentionBridge):
        return "rotary"
    if isinstance(attn, JointQKVAttentionBridge):
        return "joint_qkv"
    raise UnsupportedModelError(
        f"the instrumented recorder does not support attention bridge {type(attn).__name__}",
        "use AttentionRecorder(backend='eager') for short prompts, or a Llama/Qwen2/Mistral/GPT-2-style model",
    )


def _check_features(attn: Any, layer: int) -> None:
    hf_attn = attn.original_component
    cfg = attn.config
    problems = []
    if getattr(hf_attn, "attn_logit_softcapping", None) is not None:
        problems.append("attention logit soft-capping")
    if getattr(hf_attn, "sliding_window", None) is not None:
        problems.append("sliding-window attention")
    if getattr(hf_attn, "sinks", None) is not None:
        problems.append("learned attention sinks")
    if getattr(cfg, "gated_q_proj", False) or attn._modules.get("gate") is not None:
        problems.append("gated attention output")
    if getattr(cfg, "qk_norm_after_rope", False):
        problems.append("q/k norm after RoPE")
    if getattr(getattr(hf_attn, "config", None), "clip_qkv", None) is not None:
        problems.append("clip_qkv")
    if getattr(cfg, "use_attn_result", False):
        problems.append("use_attn_result (per-head outputs)")
    if getattr(cfg, "use_split_qkv_input", False) or getattr(cfg, "use_attn_in", False):
        problems.append("split q/k/v inputs")
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        problems.append("inverse-layer attention scaling")
    if problems:
        raise UnsupportedModelError(
            f"layer {layer}: the instrumented recorder does not implement {', '.join(problems)}",
            "use AttentionRecorder(backend='eager') on short prompts for this model",
        )


def _check_no_cache(kwargs: dict) -> None:
    cache = kwargs.get("past_key_values") or kwargs.get("layer_past")
    if cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0:
        raise UnsupportedModelError(
            "the recorder records prefill passes only, but a KV cache with earlier tokens was passed",
            "run the full sequence (prompt + generated tokens) in one forward pass under the recorder",
        )


def _rotary_forward(attn: Any, layer: int, core: Core) -> Callable[..., Any]:
    cls_forward = type(attn).forward
    hf_attn = attn.original_component

    def forward(*args: Any, **kwargs: Any) -> Any:
        _check_no_cache(kwargs)
        box: dict[str, torch.Tensor] = {}

        def grab(name: str, stop: bool = False):
            def fn(t: torch.Tensor, hook: Any) -> torch.Tensor:
                box[name] = t  # hooks see [B, S, H, D]
                if stop:
                    raise _StopAfterRotary
                return t

            return fn

        points = [(attn.hook_v, grab("v")), (attn.hook_rot_q, grab("q")), (attn.hook_rot_k, grab("k", stop=True))]
        # Appended after any user hooks, so we capture what the bridge would really use.
        with temporary_hooks(points):
            try:
                cls_forward(attn, *args, **kwargs)
            except _StopAfterRotary:
                pass
        if not {"q", "k", "v"} <= box.keys():
            raise RuntimeError(f"layer {layer}: the bridge did not fire hook_rot_q/hook_rot_k/hook_v")
        q = box["q"].transpose(1, 2)
        k = box["k"].transpose(1, 2)
        v = box["v"].transpose(1, 2)
        batch, _, seq, head_dim = q.shape
        scale = float(getattr(hf_attn, "scaling", head_dim**-0.5))
        out = core(layer, q, k, v, scale)  # [B, H, S, D]
        out = out.transpose(1, 2).reshape(batch, seq, -1)
        out = attn._pre_output_projection(out)
        o_weight = getattr(getattr(attn.o, "original_component", None), "weight", None)
        if isinstance(o_weight, torch.Tensor) and o_weight.dtype.is_floating_point and out.dtype != o_weight.dtype:
            out = out.to(o_weight.dtype)
        out = attn.hook_out(attn.o(out))
        return out, None

    return forward


def _joint_qkv_reconstruct(attn: Any, layer: int, core: Core) -> Callable[..., Any]:
    def reconstruct(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> tuple:
        _check_no_cache(kwargs)
        n_heads = attn.config.n_heads
        n_kv = getattr(attn.config, "n_key_value_heads", None) or n_heads
        q, k, v, batch, seq, head_dim = attn._reshape_qkv_to_heads(q, k, v, n_heads, n_kv)
        out = core(layer, q, k, v, float(head_dim**-0.5))
        out = attn._reshape_attn_output(out, batch, seq, n_heads, head_dim)
        return attn._apply_output_projection(out), None

    return reconstruct


@contextlib.contextmanager
def _no_mask_attention(hf_model: Any) -> Iterator[None]:
    """Stop Hugging Face from building its [B, 1, N, N] eager mask while recording.

    An attention implementation that is registered without a mask function makes HF pass
    ``attention_mask=None``; the instrumented core is causal by construction. Padded batches
    would lose their padding, so the caller checks for them separately.
    """
    from transformers import AttentionInterface

    if ATTN_IMPL_NAME not in AttentionInterface._global_mapping:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        AttentionInterface.register(ATTN_IMPL_NAME, sdpa_attention_forward)
    configs = {id(m.config): m.config for m in hf_model.modules() if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")}
    previous = {key: cfg._attn_implementation for key, cfg in configs.items()}
    try:
        for cfg in configs.values():
            cfg._attn_implementation = ATTN_IMPL_NAME
        yield
    finally:
        for key, cfg in configs.items():
            cfg._attn_implementation = previous[key]


def _reject_padding(bridge: Any):
    def pre_hook(module: Any, args: tuple, kwargs: dict) -> None:
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2 and bool((mask == 0).any()):
            raise UnsupportedModelError(
                "the recorder runs unpadded sequences only, but the attention mask has padding",
                "record prompts one at a time, or batch prompts of equal length",
            )

    return bridge.register_forward_pre_hook(pre_hook, with_kwargs=True)


@contextlib.contextmanager
def instrumented_attention(bridge: Any, core: Core, layers: list[int] | None = None) -> Iterator[None]:
    """Within the block, every attention layer's core is ``core``; restored on exit, also on errors."""
    blocks = list(bridge.blocks)
    chosen = range(len(blocks)) if layers is None else layers
    patched: list[tuple[Any, str]] = []
    for layer in chosen:
        attn = blocks[layer].attn
        bridge_kind(attn)
        _check_features(attn, layer)
    hf_model = bridge.original_model
    pad_handle = None
    try:
        for layer in chosen:
            attn = blocks[layer].attn
            if bridge_kind(attn) == "rotary":
                # object.__setattr__: the bridge's own __setattr__ would forward the
                # assignment to the wrapped HF module instead of this instance.
                object.__setattr__(attn, "forward", _rotary_forward(attn, layer, core))
                patched.append((attn, "forward"))
            else:
                object.__setattr__(attn, "_reconstruct_attention", _joint_qkv_reconstruct(attn, layer, core))
                patched.append((attn, "_reconstruct_attention"))
        pad_handle = _reject_padding(bridge)
        with _no_mask_attention(hf_model):
            yield
    finally:
        if pad_handle is not None:
            pad_handle.remove()
        for attn, name in patched:
            # The override lives in the instance __dict__; deleting it restores the class method.
            attn.__dict__.pop(name, None)
