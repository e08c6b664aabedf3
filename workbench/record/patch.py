"""Swap a bridge's attention core for the instrumented one, and swap it back.

TransformerLens 4 re-implements attention eagerly and builds the N x N scores in float32.
We keep everything the bridge does up to the rotated, normalised queries and keys (projections, q/k
norms, RoPE and their hooks) and replace only the score/softmax/PV block with a callable that returns
the attention output and records statistics. One adapter per bridge class, each applying exactly what
that class applies between the projections and the scores:

* ``rotary`` (`PositionEmbeddingsAttentionBridge`: Llama, Mistral, Qwen2/3, Gemma 1-3, OLMo 2, StableLM,
  Cohere): the bridge's own forward runs until ``hook_rot_k`` fires (q/k norms, RoPE of any layout and
  rotary fraction, llama-4 query scaling are all done by then); a hook there captures Q/K (and V from
  ``hook_v``) and stops the forward, then the output projection runs as in the bridge.
* ``joint_qkv`` (`JointQKVAttentionBridge`: GPT-2) and ``joint_qkv_rotary``
  (`JointQKVPositionEmbeddingsAttentionBridge`: GPT-NeoX/Pythia, Phi-3, Falcon): ``_reconstruct_attention``
  is replaced on the instance; the rotary variant applies the bridge's own RoPE (with its
  position-embedding hooks) before the core, as the bridge does.
* ``delegating`` (plain `AttentionBridge`: GPT-J and others whose bridge runs the Hugging Face module):
  the module's call into Hugging Face's attention interface is routed to the core, with the scaling,
  window and soft-cap the module passes.

Sliding windows and soft-capping come from `workbench.models.attention_spec` (config and module); the
features the core does not implement (ALiBi, learned sinks, gated outputs, chunked attention, ...) and
bridge classes without an adapter raise a clear error instead of giving silently different logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from workbench.errors import UnsupportedModelError
from workbench.models.attention_spec import LayerAttention, bridge_kind, layer_attention, unsupported_features
from workbench.models.generate import EDITS_ATTR, INSTRUMENTED_FLAG
from workbench.models.hooks import temporary_hooks

# core(layer, q [B,H,Nq,D], k [B,Hkv,Nk,D], v [B,Hkv,Nk,D], scale, spec, q_offset) -> out [B,H,Nq,D];
# q_offset = Nk - Nq: the absolute position of the first query (0 for a prefill, the cache length for a
# decode step against the KV cache)
Core = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, float, LayerAttention, int], torch.Tensor]

ATTN_IMPL_NAME = "workbench_recorder"

#: id(Hugging Face attention module) -> route into the core, for delegating bridges
_ROUTES: dict[int, Callable[..., torch.Tensor]] = {}
_MISSING = object()


class _StopAfterRotary(Exception):
    """Raised from hook_rot_k to leave the bridge's forward before it builds N x N scores."""


def layer_specs(bridge: Any) -> list[LayerAttention]:
    """Per-layer window and soft-cap of a bridge's model (config and Hugging Face modules)."""
    blocks = list(bridge.blocks)
    modules = [b.attn.original_component for b in blocks]
    return layer_attention(bridge.original_model.config, len(blocks), modules)


def _check_features(attn: Any, layer: int, hf_config: Any) -> None:
    problems = unsupported_features(hf_config, attn.original_component, attn)
    kind = bridge_kind(attn)
    if kind in ("joint_qkv", "joint_qkv_rotary") and "q_norm" in getattr(attn, "submodules", {}):
        problems.append("q/k norms on a fused-QKV bridge")
    if problems:
        raise UnsupportedModelError(
            f"layer {layer}: the instrumented recorder does not implement {', '.join(problems)}",
            "use AttentionRecorder(backend='eager') on short prompts for this model",
        )


#: the keyword under which Hugging Face hands an attention layer its KV cache (it changed across versions
#: and models: ``cache`` in transformers 5.2x, ``past_key_values``, ``past_key_value``, ``layer_past``)
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


def _with_cache(layer: int, k: torch.Tensor, v: torch.Tensor, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Append this forward's keys/values [B, Hkv, Nq, D] to the KV cache it carries and return every
    cached key/value; without a cache they come back unchanged.

    The update is done here, not by the bridge: TransformerLens 4.3 looks the cache up under
    ``past_key_values``/``layer_past`` only, so under transformers 5.2x (``cache``) its cached steps
    silently attend to the new token alone. Decoding needs a cache whose layers keep every key
    (`workbench.models.generate.new_cache`): a sliding-window cache layer would drop keys that the
    statistics index by absolute position (the core applies each layer's window itself).
    """
    for name in _CACHE_KWARGS:
        cache = kwargs.get(name)
        if cache is not None and hasattr(cache, "update"):
            return cache.update(k, v, layer)
    return k, v


def _live_spec(bridge: Any, layer: int, spec: LayerAttention) -> LayerAttention:
    """The layer's spec with the kernel edits active right now (`workbench.interventions.kernel_edits`)."""
    edits = bridge.__dict__.get(EDITS_ATTR, {}).get(layer, ())
    return dataclasses.replace(spec, edits=tuple(edits)) if edits else spec


def _rotary_forward(attn: Any, layer: int, core: Core, spec: LayerAttention, bridge: Any = None) -> Callable[..., Any]:
    cls_forward = type(attn).forward
    hf_attn = attn.original_component

    def forward(*args: Any, **kwargs: Any) -> Any:
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
        with temporary_hooks(points), contextlib.suppress(_StopAfterRotary):
            cls_forward(attn, *args, **kwargs)
        if not {"q", "k", "v"} <= box.keys():
            raise RuntimeError(f"layer {layer}: the bridge did not fire hook_rot_q/hook_rot_k/hook_v")
        q = box["q"].transpose(1, 2)
        k = box["k"].transpose(1, 2)
        v = box["v"].transpose(1, 2)
        k, v = _with_cache(layer, k, v, kwargs)
        batch, _, seq, head_dim = q.shape
        scale = float(getattr(hf_attn, "scaling", head_dim**-0.5))
        out = core(layer, q, k, v, scale, _live_spec(bridge, layer, spec), k.shape[-2] - seq)  # [B, H, S, D]
        out = out.transpose(1, 2).reshape(batch, seq, -1)
        out = attn._pre_output_projection(out)
        o_weight = getattr(getattr(attn.o, "original_component", None), "weight", None)
        if isinstance(o_weight, torch.Tensor) and o_weight.dtype.is_floating_point and out.dtype != o_weight.dtype:
            out = out.to(o_weight.dtype)
        out = attn.hook_out(attn.o(out))
        return out, None

    return forward


def _joint_scale(attn: Any, head_dim: int) -> float:
    """The bridge's own scale: 1/sqrt(d_head), divided by (layer + 1) when the config asks (GPT-2 option)."""
    scale = head_dim**-0.5
    if getattr(attn.config, "scale_attn_by_inverse_layer_idx", False) and getattr(attn, "_layer_idx", None) is not None:
        scale /= float(attn._layer_idx + 1)
    return scale


def _joint_qkv_reconstruct(
    attn: Any, layer: int, core: Core, spec: LayerAttention, rotary: bool, bridge: Any = None
) -> Callable[..., Any]:
    def reconstruct(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> tuple:
        n_heads = attn.config.n_heads
        n_kv = getattr(attn.config, "n_key_value_heads", None) or n_heads
        q, k, v, batch, seq, head_dim = attn._reshape_qkv_to_heads(q, k, v, n_heads, n_kv)
        if rotary:
            position_embeddings = kwargs.get("position_embeddings")
            if not isinstance(position_embeddings, tuple):
                raise UnsupportedModelError(
                    f"layer {layer}: the fused-QKV rotary bridge got no position embeddings, so RoPE cannot be applied",
                    "use AttentionRecorder(backend='eager') for this model",
                )
            cos, sin = attn._apply_position_embedding_hooks(position_embeddings)
            q, k = attn._apply_rotary_pos_emb(q, k, cos, sin)
        k, v = _with_cache(layer, k, v, kwargs)
        out = core(layer, q, k, v, _joint_scale(attn, head_dim), _live_spec(bridge, layer, spec), k.shape[-2] - q.shape[-2])
        out = attn._reshape_attn_output(out, batch, seq, n_heads, head_dim)
        return attn._apply_output_projection(out), None

    return reconstruct


def _delegated_route(layer: int, core: Core, spec: LayerAttention, bridge: Any = None) -> Callable[..., torch.Tensor]:
    def route(query, key, value, scaling, sliding_window, softcap) -> torch.Tensor:
        # the module updated its cache itself: keys are every cached key, queries the last positions
        window = sliding_window if sliding_window else spec.sliding_window
        cap = softcap if softcap else spec.softcap
        scale = float(scaling) if scaling is not None else query.shape[-1] ** -0.5
        live = _live_spec(bridge, layer, LayerAttention(sliding_window=window, softcap=cap))
        out = core(layer, query, key, value, scale, live, key.shape[-2] - query.shape[-2])
        return out.transpose(1, 2).contiguous()  # Hugging Face's interfaces return [B, N, H, D]

    return route


def _workbench_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The attention function registered as ``ATTN_IMPL_NAME``: delegated modules go to the core."""
    route = _ROUTES.get(id(module))
    if route is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    return route(query, key, value, scaling, kwargs.get("sliding_window"), kwargs.get("softcap")), None


@contextlib.contextmanager
def _no_mask_attention(hf_model: Any) -> Iterator[None]:
    """Stop Hugging Face from building its [B, 1, N, N] eager mask while recording.

    An attention implementation that is registered without a mask function makes HF pass
    ``attention_mask=None``; the instrumented core is causal (and windowed) by construction. Padded
    batches would lose their padding, so the caller checks for them separately.
    """
    from transformers import AttentionInterface

    if AttentionInterface._global_mapping.get(ATTN_IMPL_NAME) is not _workbench_attention:
        AttentionInterface.register(ATTN_IMPL_NAME, _workbench_attention)
    configs = {
        id(m.config): m.config for m in hf_model.modules() if hasattr(m, "config") and hasattr(m.config, "_attn_implementation")
    }
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


def check_instrumentable(bridge: Any) -> list[LayerAttention]:
    """Raise `UnsupportedModelError` naming what the core cannot do; return every layer's spec."""
    blocks = list(bridge.blocks)
    hf_config = bridge.original_model.config
    specs = layer_specs(bridge)
    for layer, block in enumerate(blocks):
        _check_features(block.attn, layer, hf_config)
    return specs


def plain_core(backend: str = "auto", chunk: int = 256) -> Core:
    """A core that only computes attention (no statistics kept): unrecorded layers, the self-check."""
    from workbench.kernels import attention_with_stats

    def core(
        layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, spec: LayerAttention, q_offset: int = 0
    ) -> torch.Tensor:
        out, _ = attention_with_stats(
            q,
            k,
            v,
            scale=scale,
            causal=True,
            q_offset=q_offset,
            columns=False,
            backend=backend,
            chunk=chunk,
            sliding_window=spec.sliding_window,
            softcap=spec.softcap,
            edits=spec.edits,
        )
        return out

    return core


@contextlib.contextmanager
def instrumented_attention(bridge: Any, core: Core, layers: list[int] | None = None) -> Iterator[None]:
    """Within the block, the attention core of the chosen layers (all by default) is ``core``; restored
    on exit, also on errors, to whatever was there before (so an inner block leaves an outer one intact).

    Every layer is instrumented: Hugging Face builds no mask while any layer is (see
    `_no_mask_attention`), so the other layers run a plain instrumented core that applies their
    windows itself.
    """
    blocks = list(bridge.blocks)
    chosen = set(range(len(blocks))) if layers is None else set(layers)
    specs = check_instrumentable(bridge)
    other = plain_core()
    patched: list[tuple[Any, str, Any]] = []
    routed: list[tuple[int, Any]] = []
    hf_model = bridge.original_model
    pad_handle = None
    try:
        for layer in range(len(blocks)):
            attn = blocks[layer].attn
            kind = bridge_kind(attn)
            layer_core = core if layer in chosen else other
            # object.__setattr__: the bridge's own __setattr__ would forward the
            # assignment to the wrapped HF module instead of this instance.
            if kind == "rotary":
                name, fn = "forward", _rotary_forward(attn, layer, layer_core, specs[layer], bridge)
            elif kind in ("joint_qkv", "joint_qkv_rotary"):
                name = "_reconstruct_attention"
                fn = _joint_qkv_reconstruct(
                    attn, layer, layer_core, specs[layer], rotary=kind == "joint_qkv_rotary", bridge=bridge
                )
            else:
                key = id(attn.original_component)
                routed.append((key, _ROUTES.get(key)))
                _ROUTES[key] = _delegated_route(layer, layer_core, specs[layer], bridge)
                continue
            patched.append((attn, name, attn.__dict__.get(name, _MISSING)))
            object.__setattr__(attn, name, fn)
        pad_handle = _reject_padding(bridge)
        bridge.__dict__[INSTRUMENTED_FLAG] = bridge.__dict__.get(INSTRUMENTED_FLAG, 0) + 1
        try:
            with _no_mask_attention(hf_model):
                yield
        finally:
            bridge.__dict__[INSTRUMENTED_FLAG] -= 1
    finally:
        if pad_handle is not None:
            pad_handle.remove()
        for key, previous in reversed(routed):
            if previous is None:
                _ROUTES.pop(key, None)
            else:
                _ROUTES[key] = previous
        for attn, name, previous in reversed(patched):
            # The override lives in the instance __dict__; deleting it restores the class method.
            if previous is _MISSING:
                attn.__dict__.pop(name, None)
            else:
                attn.__dict__[name] = previous
