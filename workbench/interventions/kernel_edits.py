"""Install per-head kernel edits (removed keys, streaming windows, ACT) on a model, as a context manager.

    edits = {3: [HeadEdit(head=5, stream=(4, 32))]}
    with kernel_edits(model, edits), AttentionRecorder(model, layers=()):
        result = generate(model, prompt, 16)      # the edit applies in the prefill and in every step

The edits are descriptions the instrumented core applies while it computes attention (kernels/edits.py):
no N x N mask is built, so they work at any context length and on cached decode steps. They act only
under the instrumented attention (a recorder, `workbench.record.decode.generate`); a forward on the
bridge's own eager attention inside the block is refused, unless ``eager_too`` says the caller installed
the equivalent eager hook itself (the dual-path checks in kv_budget and attention_edits do).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from workbench.errors import WorkbenchError
from workbench.kernels import HeadEdit
from workbench.models.generate import EDITS_ATTR, is_instrumented
from workbench.models.model import Model

LayerEdits = Mapping[int, Sequence[HeadEdit]]


def _refuse_eager(model: Model):
    def pre_hook(module, args, kwargs) -> None:
        if not is_instrumented(model):
            raise WorkbenchError(
                "kernel edits apply only inside the instrumented attention, but this forward runs the bridge's eager attention",
                "run the forward inside an AttentionRecorder (or workbench.record.decode.generate)",
            )

    return model.bridge.register_forward_pre_hook(pre_hook, with_kwargs=True)


@contextlib.contextmanager
def kernel_edits(model: Model, edits: LayerEdits, eager_too: bool = False) -> Iterator[None]:
    """Within the block, the instrumented core applies ``edits`` ({layer: [HeadEdit]}) on top of any
    edits already in force; the previous set is restored on exit, also on errors."""
    geo = model.geometry
    for layer, layer_edits in edits.items():
        if not 0 <= int(layer) < geo.n_layers:
            raise WorkbenchError(
                f"kernel edit on layer {layer}: the model has {geo.n_layers} layers", f"use 0..{geo.n_layers - 1}"
            )
        for e in layer_edits:
            if not 0 <= e.head < geo.n_heads:
                raise WorkbenchError(
                    f"kernel edit on L{layer}H{e.head}: the model has {geo.n_heads} heads per layer", f"use 0..{geo.n_heads - 1}"
                )
    store = model.bridge.__dict__
    previous = store.get(EDITS_ATTR)
    merged: dict[int, tuple[HeadEdit, ...]] = dict(previous or {})
    for layer, layer_edits in edits.items():
        merged[int(layer)] = merged.get(int(layer), ()) + tuple(layer_edits)
    handle = None if eager_too else _refuse_eager(model)
    store[EDITS_ATTR] = merged
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()
        if previous is None:
            store.pop(EDITS_ATTR, None)
        else:
            store[EDITS_ATTR] = previous
