"""Head ablation on a `Model`, as a context manager.

Three modes, one list of heads:

- ``"zero"``: the head's slice of ``hook_z`` (its attention output per position, before ``o_proj``)
  is set to 0. With no biases this equals the "scaling contribution" ablation at scale 0.
- ``"mean"``: the head's slice of ``hook_z`` is replaced by its mean over a reference batch
  (one vector per head, averaged over every reference token), given as ``means`` or computed
  from ``reference`` tokens with `head_means`.
- ``"uniform"``: the head's query is multiplied by ``epsilon`` (default 1e-5) where the scores
  use it: after any q norm and after RoPE (``hook_rot_q`` on rotary bridges; ``hook_q`` on bridges
  without q norms, where RoPE is linear in q). So its attention becomes ~uniform over the keys it
  can see, windows counted ("undifferentiated attention", Zhou et al. 2025, Ships/Sahara). Scaling
  before a norm would be undone by it (Qwen3, Gemma 3) or would move the other heads of a norm taken
  across heads (OLMo 2). This is done per *query* head, so with GQA the other query heads sharing
  the same KV head are untouched. The head still writes the mean of the visible values. (ε must be
  > 0: scaling the scores by 0 would give NaNs that TransformerLens turns into zero attention,
  silently a different ablation.)

`ablate_rows` ablates a different head set in each batch row of one forward (a per-row head mask),
so a sweep evaluates many heads per pass.

Hooks are installed with the bridge's ``hooks`` context, so they are removed when the block
exits, also when it raises.

    with ablate_heads(model, "L1H3,L2H0", mode="mean", reference=tokens):
        logits = model.logits(tokens)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, cast

import torch

from workbench.errors import UnsupportedModelError, WorkbenchError
from workbench.models.attention_spec import bridge_kind
from workbench.models.heads import Head, HeadLike, parse_heads
from workbench.models.hooks import edits_paused
from workbench.models.model import Model

AblationMode = Literal["zero", "mean", "uniform"]
ABLATION_MODES: tuple[str, ...] = ("zero", "mean", "uniform")
DEFAULT_EPSILON = 1e-5

#: per layer, the mean ``hook_z`` of every query head: a tensor [n_heads, d_head]
HeadMeans = dict[int, torch.Tensor]


def _z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def _q_hook(model: Model, layer: int) -> str:
    """The hook on the query exactly as the scores use it (after q norms and RoPE)."""
    attn = model.bridge.blocks[layer].attn
    kind = bridge_kind(attn)
    if kind == "rotary":
        if getattr(attn.config, "qk_norm_after_rope", False):
            return f"blocks.{layer}.attn.hook_q_normed"
        return f"blocks.{layer}.attn.hook_rot_q"
    if "q_norm" in getattr(attn, "submodules", {}):
        raise UnsupportedModelError(
            f"layer {layer}: uniform ablation on a {type(attn).__name__} with a q norm is not implemented "
            "(scaling q before the norm would be undone)",
            "use mode='zero' or mode='mean' for this model",
        )
    return f"blocks.{layer}.attn.hook_q"


def _heads_by_layer(heads: Iterable[Head]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for h in heads:
        out.setdefault(h.layer, []).append(h.head)
    return out


def resolve_heads(model: Model, heads: str | Iterable[HeadLike]) -> list[Head]:
    """Parse and range-check heads against the model's geometry."""
    geo = model.geometry
    return parse_heads(heads, geo.n_layers, geo.n_heads)


def _as_batches(reference) -> list[torch.Tensor]:
    if isinstance(reference, torch.Tensor):
        return [reference if reference.dim() == 2 else reference[None]]
    return [t if t.dim() == 2 else t[None] for t in reference]


@torch.no_grad()
def head_means(
    model: Model,
    reference: torch.Tensor | Sequence[torch.Tensor],
    layers: Iterable[int] | None = None,
    mask: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> HeadMeans:
    """Mean of ``hook_z`` per query head over every token of ``reference`` (ids [batch, seq] or a list).

    ``mask`` (same shape as each reference batch, 1 = real token) excludes padding from the mean.
    Returns {layer: [n_heads, d_head]} for ``layers`` (all layers by default).
    """
    geo = model.geometry
    layers = list(range(geo.n_layers)) if layers is None else sorted(set(layers))
    batches = _as_batches(reference)
    masks = [None] * len(batches) if mask is None else _as_batches(mask)
    if len(masks) != len(batches):
        raise WorkbenchError(f"head_means got {len(batches)} reference batches but {len(masks)} masks", "give one mask per batch")
    sums = {layer: torch.zeros(geo.n_heads, geo.d_head, dtype=torch.float64) for layer in layers}
    count = 0.0
    for ids, m in zip(batches, masks):
        weights = torch.ones(ids.shape, dtype=torch.float64) if m is None else m.to(torch.float64).cpu()
        if weights.shape != ids.shape:
            raise WorkbenchError(f"mask shape {tuple(weights.shape)} differs from reference shape {tuple(ids.shape)}")

        def grab(z: torch.Tensor, hook, _w=weights) -> None:
            layer = int(hook.name.split(".")[1])
            zz = z.detach().to(torch.float64).cpu()  # [batch, pos, n_heads, d_head]
            sums[layer] += torch.einsum("bp,bphd->hd", _w, zz)

        with model.bridge.hooks(fwd_hooks=[(_z_hook(layer), grab) for layer in layers]):
            model.bridge(ids.to(model.device))
        count += float(weights.sum())
    if count == 0:
        raise WorkbenchError("head_means got no reference tokens", "give a non-empty reference batch")
    return {layer: (s / count).to(model.dtype) for layer, s in sums.items()}


def _check_mode(mode: str, epsilon: float) -> None:
    """One check of the ablation mode and the uniform-attention epsilon for both ablation paths."""
    if mode not in ABLATION_MODES:
        raise WorkbenchError(f"unknown ablation mode {mode!r}", f"use one of {', '.join(ABLATION_MODES)}")
    if mode == "uniform" and not epsilon > 0:
        raise WorkbenchError(
            f"uniform ablation needs epsilon > 0, got {epsilon}",
            "use a small positive epsilon such as 1e-5 (0 turns the pattern into NaN, then zero)",
        )


def _layer_means(
    model: Model, layers: Iterable[int], means: HeadMeans | None, reference: torch.Tensor | Sequence[torch.Tensor] | None
) -> HeadMeans:
    """The head means mean ablation needs for ``layers``: given, or computed from ``reference``."""
    layers = list(layers)
    if means is None:
        if reference is None:
            raise WorkbenchError(
                "mean ablation needs the head means or a reference batch", "pass means=... or reference=<token ids>"
            )
        means = head_means(model, reference, layers=layers)
    missing = [layer for layer in layers if layer not in means]
    if missing:
        raise WorkbenchError(f"the head means have no entry for layer(s) {missing}", "compute them with head_means")
    return means


def ablation_hooks(
    model: Model,
    heads: str | Iterable[HeadLike],
    mode: AblationMode = "zero",
    *,
    means: HeadMeans | None = None,
    reference: torch.Tensor | Sequence[torch.Tensor] | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> list[tuple[str, object]]:
    """The (hook name, function) pairs that ablate ``heads``; `ablate_heads` installs them."""
    _check_mode(mode, epsilon)
    parsed = resolve_heads(model, heads)
    by_layer = _heads_by_layer(parsed)
    if mode == "mean":
        means = _layer_means(model, by_layer, means, reference)
    hooks: list[tuple[str, object]] = []
    for layer, idx in by_layer.items():
        index = torch.tensor(idx, dtype=torch.long)
        if mode == "uniform":

            def scale_q(q: torch.Tensor, hook, _i=index) -> torch.Tensor:
                q = q.clone()
                q[:, :, _i.to(q.device), :] *= epsilon
                return q

            hooks.append((_q_hook(model, layer), scale_q))
        elif mode == "zero":

            def zero_z(z: torch.Tensor, hook, _i=index) -> torch.Tensor:
                z = z.clone()
                z[:, :, _i.to(z.device), :] = 0
                return z

            hooks.append((_z_hook(layer), zero_z))
        else:
            assert means is not None
            layer_means = means[layer]

            def mean_z(z: torch.Tensor, hook, _i=index, _m=layer_means) -> torch.Tensor:
                z = z.clone()
                idx_dev = _i.to(z.device)
                z[:, :, idx_dev, :] = _m.to(device=z.device, dtype=z.dtype)[idx_dev]
                return z

            hooks.append((_z_hook(layer), mean_z))
    return hooks


@contextlib.contextmanager
def ablate_heads(
    model: Model,
    heads: str | Iterable[HeadLike],
    mode: AblationMode = "zero",
    *,
    means: HeadMeans | None = None,
    reference: torch.Tensor | Sequence[torch.Tensor] | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> Iterator[list[Head]]:
    """Ablate ``heads`` of ``model`` (a workbench `Model`) inside the block; yields the parsed heads.

    An empty list of heads is allowed and changes nothing (handy as the baseline of a sweep).
    """
    parsed = resolve_heads(model, heads)
    hooks = ablation_hooks(model, parsed, mode, means=means, reference=reference, epsilon=epsilon) if parsed else []
    with model.bridge.hooks(fwd_hooks=hooks):
        yield parsed


# ----------------------------------------------------------------------------- one head set per batch row


def _row_masks(model: Model, rows: Sequence[list[Head]]) -> dict[int, torch.Tensor]:
    """Per layer with any ablated head: a [rows, n_heads] bool mask (True = ablate in that row)."""
    n_heads = model.geometry.n_heads
    masks: dict[int, torch.Tensor] = {}
    for r, heads in enumerate(rows):
        for h in heads:
            if h.layer not in masks:
                masks[h.layer] = torch.zeros(len(rows), n_heads, dtype=torch.bool)
            masks[h.layer][r, h.head] = True
    return masks


def _check_rows(t: torch.Tensor, mask: torch.Tensor, hook: Any) -> None:
    if t.shape[0] != mask.shape[0]:
        raise WorkbenchError(
            f"the row ablation describes {mask.shape[0]} batch rows but {getattr(hook, 'name', 'a hook')} got a batch of {t.shape[0]}",
            "run the forward on exactly one row per head set given to ablate_rows",
        )


def row_ablation_hooks(
    model: Model,
    rows: Sequence[str | Iterable[HeadLike]],
    mode: AblationMode = "zero",
    *,
    means: HeadMeans | None = None,
    reference: torch.Tensor | Sequence[torch.Tensor] | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> list[tuple[str, object]]:
    """Hooks that ablate ``rows[r]`` in batch row ``r`` only (`ablate_rows` installs them).

    Each element is the same edit `ablation_hooks` makes, selected per row with ``torch.where``, so a
    row's numbers are those of `ablate_heads` with its own heads (up to the batch's float order). They
    stand aside during the instrumented core's self-check, whose one-row probe compares unedited cores."""
    _check_mode(mode, epsilon)
    parsed = [resolve_heads(model, heads) for heads in rows]
    masks = _row_masks(model, parsed)
    if mode == "mean":
        means = _layer_means(model, masks, means, reference)
    hooks: list[tuple[str, object]] = []
    for layer, mask in masks.items():
        if mode == "uniform":

            def scale_q(q: torch.Tensor, hook, _m=mask) -> torch.Tensor:
                if edits_paused(model.bridge):  # the core's one-row self-check probe
                    return q
                _check_rows(q, _m, hook)
                return torch.where(_m.to(q.device)[:, None, :, None], q * epsilon, q)

            hooks.append((_q_hook(model, layer), scale_q))
        else:
            fill = None if mode == "zero" else means[layer]  # type: ignore[index]

            def edit_z(z: torch.Tensor, hook, _m=mask, _f=fill) -> torch.Tensor:
                if edits_paused(model.bridge):
                    return z
                _check_rows(z, _m, hook)
                value = torch.zeros((), dtype=z.dtype, device=z.device) if _f is None else _f.to(device=z.device, dtype=z.dtype)
                return torch.where(_m.to(z.device)[:, None, :, None], value, z)

            hooks.append((_z_hook(layer), edit_z))
    return hooks


@contextlib.contextmanager
def ablate_rows(
    model: Model,
    rows: Sequence[str | Iterable[HeadLike]],
    mode: AblationMode = "zero",
    *,
    means: HeadMeans | None = None,
    reference: torch.Tensor | Sequence[torch.Tensor] | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> Iterator[list[list[Head]]]:
    """Ablate a different head set in each batch row: a forward inside the block must have batch size
    ``len(rows)``, and row ``r`` runs as under ``ablate_heads(model, rows[r], mode)``. One pass then
    sweeps many heads (one head, or one group, per row). Yields the parsed head sets.

        with ablate_rows(model, [["L0H1"], ["L1H2"], []], "uniform"):
            logits = model.logits(tokens.expand(3, -1))   # row 2 is the unablated baseline
    """
    parsed = [resolve_heads(model, heads) for heads in rows]
    hooks = row_ablation_hooks(model, parsed, mode, means=means, reference=reference, epsilon=epsilon)
    with model.bridge.hooks(fwd_hooks=hooks):
        yield parsed


def ablated_logits(
    model: Model,
    tokens: torch.Tensor,
    heads: str | Iterable[HeadLike],
    mode: AblationMode = "zero",
    **kwargs,
) -> torch.Tensor:
    """Logits of ``tokens`` with ``heads`` ablated (a one-call convenience around `ablate_heads`)."""
    with ablate_heads(model, heads, mode, **kwargs):
        return model.logits(tokens)


# ----------------------------------------------------------------------------- raw Hugging Face models
#
# The same three ablations on a plain Hugging Face model, through torch hooks and Hugging Face's
# attention interface. Zero and mean edit the input of the attention's output projection (the
# bridge's ``hook_z``, heads concatenated). Uniform scales the query *inside* the attention call:
# the query the attention function receives has been through every q norm and RoPE, exactly as
# ``hook_rot_q`` on the bridge. This path runs the model's own attention kernel (SDPA), several
# times faster on CPU than the bridge's eager attention, for sweeps such as the organisms'
# ground-truth table; tests check it against `ablate_heads` on every test architecture.

_OUT_PROJ_NAMES = ("o_proj", "dense", "out_proj", "c_proj")
UNIFORM_IMPL_NAME = "workbench_uniform_q"
#: id(attention module) -> (query-head index, epsilon), while an `ablate_heads_hf` block is active
_Q_SCALES: dict[int, tuple[torch.Tensor, float]] = {}
#: the attention implementation each config had before `ablate_heads_hf` switched it
_ORIGINAL_IMPL: dict[int, str] = {}
#: modules whose query was scaled during their current forward (checked when the forward ends)
_ROUTED: set[int] = set()


def _require_routed(module, args, output):
    """Forward hook: a module with heads to ablate must have called the attention interface."""
    if id(module) not in _ROUTED:
        raise UnsupportedModelError(
            f"{type(module).__name__} computes attention without Hugging Face's attention interface, so "
            "ablate_heads_hf cannot scale its queries after RoPE (its output would be unablated)",
            "use ablate_heads on a workbench Model for this architecture",
        )
    _ROUTED.discard(id(module))


def _hf_attention_modules(hf_model) -> list:
    """The attention module of every layer, ordered by ``layer_idx`` (Hugging Face's own numbering)."""
    if any(type(m).__module__.startswith("transformer_lens") for m in hf_model.modules()):
        raise WorkbenchError(
            "ablate_heads_hf got a model whose layers are run by a TransformerLens bridge (model.hf_model): "
            "the bridge re-implements attention, so the Hugging Face attention call is never made",
            "use ablate_heads(model, ...) on the workbench Model, or load a separate Hugging Face model "
            "with AutoModelForCausalLM.from_pretrained(folder) for this fast path",
        )
    found: dict[int, torch.nn.Module] = {}
    for module in hf_model.modules():
        idx = getattr(module, "layer_idx", None)
        if isinstance(idx, int) and type(module).__name__.endswith("Attention") and _out_proj(module, None) is not None:
            found.setdefault(idx, module)
    n_layers = hf_geometry(hf_model)[0]
    if sorted(found) != list(range(n_layers)):
        raise WorkbenchError(
            f"{type(hf_model).__name__}: could not find one attention module with an output projection per layer "
            f"(found layers {sorted(found)} of {n_layers})",
            "use ablate_heads on a workbench Model (any architecture the bridge supports)",
        )
    return [found[i] for i in range(n_layers)]


def _out_proj(module, default=WorkbenchError):
    for name in _OUT_PROJ_NAMES:
        proj = getattr(module, name, None)
        if isinstance(proj, torch.nn.Module):
            return proj
    if default is WorkbenchError:
        raise WorkbenchError(f"{type(module).__name__} has none of the output projections {_OUT_PROJ_NAMES}")
    return default


def hf_geometry(hf_model) -> tuple[int, int, int]:
    """(layers, query heads, head dim) of a plain Hugging Face model, from its config."""
    from workbench.models.geometry import geometry_from_config

    geo = geometry_from_config(hf_model.config)
    return geo.n_layers, geo.n_heads, geo.d_head


@torch.no_grad()
def head_means_hf(hf_model, reference: torch.Tensor | Sequence[torch.Tensor]) -> HeadMeans:
    """`head_means` for a plain Hugging Face model (mean output-projection input per head)."""
    n_layers, n_heads, d_head = hf_geometry(hf_model)
    attn = _hf_attention_modules(hf_model)
    sums = {layer: torch.zeros(n_heads, d_head, dtype=torch.float64) for layer in range(n_layers)}
    count = 0
    handles = []
    try:
        for layer, module in enumerate(attn):

            def grab(mod, args, _layer=layer):
                z = args[0].detach().to(torch.float64).cpu()
                sums[_layer] += z.reshape(-1, n_heads, d_head).sum(0)

            handles.append(_out_proj(module).register_forward_pre_hook(grab))
        for ids in _as_batches(reference):
            hf_model(input_ids=ids.to(next(hf_model.parameters()).device))
            count += ids.numel()
    finally:
        for h in handles:
            h.remove()
    dtype = next(hf_model.parameters()).dtype
    return {layer: (s / count).to(dtype) for layer, s in sums.items()}


def _scaled_query_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention function that scales chosen query heads, then runs the model's original implementation."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    entry = _Q_SCALES.get(id(module))
    if entry is not None:
        _ROUTED.add(id(module))
        idx, eps = entry
        query = query.clone()
        query[:, idx.to(query.device)] *= eps
    original = _ORIGINAL_IMPL.get(id(module.config), "sdpa")
    if original in ALL_ATTENTION_FUNCTIONS:
        fn = ALL_ATTENTION_FUNCTIONS[original]
    else:  # "eager": every modeling file defines its own eager_attention_forward
        import importlib

        fn = importlib.import_module(type(module).__module__).eager_attention_forward
    return fn(module, query, key, value, attention_mask, **kwargs)


@contextlib.contextmanager
def _uniform_query_attention(hf_model, scales: dict[int, tuple[torch.Tensor, float]]) -> Iterator[None]:
    """Route every attention call through `_scaled_query_attention` while the block runs."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    configs = {id(m.config): m.config for m in hf_model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")}
    originals = {key: cfg._attn_implementation for key, cfg in configs.items()}
    if any(str(impl).startswith(UNIFORM_IMPL_NAME) for impl in originals.values()):
        raise WorkbenchError(
            "ablate_heads_hf(mode='uniform') blocks cannot be nested on one model", "combine the heads in one call"
        )
    if len(set(originals.values())) != 1:
        raise WorkbenchError(
            f"the model's sub-configs use attention implementations {sorted(set(originals.values()))}",
            "load the model with one attn_implementation (e.g. sdpa)",
        )
    original = next(iter(originals.values()))
    # one registered name per original implementation, with that implementation's masks: models with
    # different implementations ablated at the same time never share (and overwrite) a registration
    name = f"{UNIFORM_IMPL_NAME}__{original}"
    AttentionInterface.register(name, _scaled_query_attention)
    # cast: mypy joins the mapping's differently-typed functions to builtins.function, which it cannot call
    mask_fn = cast("Callable[..., Any] | None", ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(original))
    if mask_fn is not None:
        # an implementation without a mask function (a custom kernel) gets none under the new name either,
        # so transformers passes the mask through as it did before; a None entry would be called
        AttentionMaskInterface.register(name, mask_fn)
    try:
        for key, cfg in configs.items():
            _ORIGINAL_IMPL[key] = originals[key]
            cfg._attn_implementation = name
        _Q_SCALES.update(scales)
        yield
    finally:
        for key in scales:
            _Q_SCALES.pop(key, None)
        for key, cfg in configs.items():
            cfg._attn_implementation = originals[key]
            _ORIGINAL_IMPL.pop(key, None)


@contextlib.contextmanager
def ablate_heads_hf(
    hf_model,
    heads: str | Iterable[HeadLike],
    mode: AblationMode = "zero",
    *,
    means: HeadMeans | None = None,
    epsilon: float = DEFAULT_EPSILON,
) -> Iterator[list[Head]]:
    """`ablate_heads` for a plain Hugging Face model; hooks and the attention switch are undone on exit."""
    _check_mode(mode, epsilon)
    n_layers, n_heads, d_head = hf_geometry(hf_model)
    parsed = parse_heads(heads, n_layers, n_heads)
    if mode == "mean" and means is None and parsed:
        raise WorkbenchError("mean ablation needs the head means", "compute them with head_means_hf")
    attn = _hf_attention_modules(hf_model)
    by_layer = _heads_by_layer(parsed)
    if mode == "uniform":
        scales = {id(attn[layer]): (torch.tensor(idx, dtype=torch.long), epsilon) for layer, idx in by_layer.items()}
        guards = [attn[layer].register_forward_hook(_require_routed) for layer in by_layer]
        try:
            with _uniform_query_attention(hf_model, scales):
                yield parsed
        finally:
            for g in guards:
                g.remove()
            _ROUTED.clear()
        return
    handles = []
    try:
        for layer, idx in by_layer.items():
            index = torch.tensor(idx, dtype=torch.long)
            fill = None if mode == "zero" else means[layer]  # type: ignore[index]

            def edit_z(mod, args, _i=index, _fill=fill):
                x = args[0]
                z = x.reshape(*x.shape[:-1], n_heads, d_head).clone()
                i = _i.to(z.device)
                z[..., i, :] = 0 if _fill is None else _fill.to(device=z.device, dtype=z.dtype)[i]
                return (z.reshape(x.shape), *args[1:])

            handles.append(_out_proj(attn[layer]).register_forward_pre_hook(edit_z))
        yield parsed
    finally:
        for h in handles:
            h.remove()
