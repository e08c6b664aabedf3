"""What each layer's attention really computes, read from the Hugging Face config and the bridge.

Transformers 5 keeps some features in the config only (Mistral's ``sliding_window`` reaches the mask
builder, not the attention module), others on the module (Gemma 2's ``attn_logit_softcapping``). A
recorder that looked at module attributes alone silently dropped Mistral's window. Here every feature is
read from both, per layer, and anything the instrumented core does not implement is named, so callers
can refuse it instead of printing wrong numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.errors import UnsupportedModelError

#: the layer types whose attention the instrumented core implements
KNOWN_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class LayerAttention:
    """The masking and score transform of one layer (beyond plain causal softmax(q.k * scale))."""

    sliding_window: int | None = None  # query i sees keys i - W < j <= i
    softcap: float | None = None  # scores -> softcap * tanh(scores / softcap) before the mask
    # per-head causal edits active now (workbench.kernels.HeadEdit: removed keys, streaming windows, ACT),
    # installed by workbench.interventions.kernel_edits and applied inside the instrumented core
    edits: tuple[Any, ...] = ()

    def describe(self) -> str:
        parts = []
        if self.sliding_window is not None:
            parts.append(f"sliding window {self.sliding_window}")
        if self.softcap is not None:
            parts.append(f"soft-cap {self.softcap:g}")
        if self.edits:
            parts.append(f"{len(self.edits)} head edit(s)")
        return ", ".join(parts) or "full causal"


BRIDGE_KINDS = ("rotary", "joint_qkv", "joint_qkv_rotary", "delegating")


def bridge_kind(attn: Any) -> str:
    """Which adapter handles this attention bridge (exact classes: a subclass may compute differently)."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge
    from transformer_lens.model_bridge.generalized_components.joint_qkv_attention import JointQKVAttentionBridge
    from transformer_lens.model_bridge.generalized_components.joint_qkv_position_embeddings_attention import (
        JointQKVPositionEmbeddingsAttentionBridge,
    )
    from transformer_lens.model_bridge.generalized_components.position_embeddings_attention import (
        PositionEmbeddingsAttentionBridge,
    )

    kinds = {
        PositionEmbeddingsAttentionBridge: "rotary",
        JointQKVAttentionBridge: "joint_qkv",
        JointQKVPositionEmbeddingsAttentionBridge: "joint_qkv_rotary",
        AttentionBridge: "delegating",
    }
    kind = kinds.get(type(attn))
    if kind is None:
        raise UnsupportedModelError(
            f"the instrumented recorder has no adapter for attention bridge {type(attn).__name__}",
            "use AttentionRecorder(backend='eager') for short prompts; supported bridges: "
            + ", ".join(k.__name__ for k in kinds),
        )
    return kind


def _get(config: Any, name: str) -> Any:
    if isinstance(config, dict):
        return config.get(name)
    return getattr(config, name, None)


def layer_windows(hf_config: Any, n_layers: int) -> list[int | None]:
    """Per-layer sliding window, as Hugging Face builds the masks.

    ``layer_types`` (Gemma 2/3, Qwen2, newer configs) names each layer's kind; without it a set
    ``sliding_window`` applies to every layer (Mistral, Phi-3, Starcoder2, Mixtral) unless
    ``use_sliding_window`` is false (Qwen2-style switches).
    """
    window = _get(hf_config, "sliding_window")
    layer_types = _get(hf_config, "layer_types")
    if layer_types is not None:
        layer_types = list(layer_types)
        unknown = sorted(set(layer_types) - set(KNOWN_LAYER_TYPES))
        if unknown:
            raise UnsupportedModelError(
                f"the model has attention layer types {unknown}, which the instrumented recorder does not implement",
                "use AttentionRecorder(backend='eager') on short prompts for this model",
            )
        if len(layer_types) != n_layers:
            raise UnsupportedModelError(
                f"config.layer_types has {len(layer_types)} entries for {n_layers} layers",
                "fix the model's config.json (one layer type per layer)",
            )
        if "sliding_attention" in layer_types and not window:
            raise UnsupportedModelError(
                "config.layer_types has sliding_attention layers but config.sliding_window is not set",
                "fix the model's config.json (set sliding_window)",
            )
        return [int(window) if t == "sliding_attention" else None for t in layer_types]
    if window is None or _get(hf_config, "use_sliding_window") is False:
        return [None] * n_layers
    return [int(window)] * n_layers


def attention_softcap(hf_config: Any, hf_attn: Any = None) -> float | None:
    """Attention-logit soft-cap (Gemma 2): from the module when it has one, else from the config."""
    cap = getattr(hf_attn, "attn_logit_softcapping", None) if hf_attn is not None else None
    if cap is None:
        cap = _get(hf_config, "attn_logit_softcapping")
    return None if cap is None else float(cap)


def layer_attention(hf_config: Any, n_layers: int, hf_attn_modules: list[Any] | None = None) -> list[LayerAttention]:
    """`LayerAttention` of every layer (modules optional: the config alone gives the window)."""
    windows = layer_windows(hf_config, n_layers)
    out = []
    for layer in range(n_layers):
        module = hf_attn_modules[layer] if hf_attn_modules is not None else None
        module_window = getattr(module, "sliding_window", None) if module is not None else None
        window = windows[layer]
        if window is None and isinstance(module_window, int) and module_window > 0:
            window = module_window  # a module that windows although the config does not say so
        out.append(LayerAttention(sliding_window=window, softcap=attention_softcap(hf_config, module)))
    return out


def unsupported_features(hf_config: Any, hf_attn: Any, bridge_attn: Any) -> list[str]:
    """Features of one layer that the instrumented core does not implement (empty when all is known)."""
    cfg = getattr(bridge_attn, "config", None)
    problems = []
    if _get(hf_config, "alibi") or "ALiBi" in type(bridge_attn).__name__ or "Alibi" in type(bridge_attn).__name__:
        problems.append("ALiBi position biases")
    if getattr(hf_attn, "sinks", None) is not None:
        problems.append("learned attention sinks")
    if getattr(cfg, "gated_q_proj", False) or getattr(bridge_attn, "_modules", {}).get("gate") is not None:
        problems.append("gated attention output")
    if getattr(cfg, "qk_norm_after_rope", False):
        problems.append("q/k norm after RoPE")
    if _get(hf_config, "clip_qkv") is not None:
        problems.append("clip_qkv")
    if _get(hf_config, "attention_chunk_size"):
        problems.append("chunked attention")
    if getattr(cfg, "use_attn_result", False):
        problems.append("use_attn_result (per-head outputs)")
    if getattr(cfg, "use_split_qkv_input", False) or getattr(cfg, "use_attn_in", False):
        problems.append("split q/k/v inputs")
    return problems
